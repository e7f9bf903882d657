"""Run an untrusted Python program (a policy's PAL solution) in a contained child process.

:func:`run_program` starts a fresh interpreter (``python -I -S``: no site packages, no user
environment) in an empty temporary directory, with an empty environment, in its own process
group, and hands it the program on stdin. Before the program runs, the child limits itself:

- CPU time (``RLIMIT_CPU``), address space (``RLIMIT_AS``: a huge allocation fails with
  ``MemoryError``), no new processes (``RLIMIT_NPROC`` = 0: a fork fails), file size
  (``RLIMIT_FSIZE``), open files, no core dumps;
- the program is checked before it runs: ``import`` only of the modules in ``allowed_modules``
  (default :data:`ALLOWED_MODULES`: math and data-structure modules, no ``os``, ``sys``,
  ``subprocess``, ``socket``, ``ctypes``, ``importlib``, nor ``operator`` and ``string``, whose
  ``attrgetter`` and ``Formatter.get_field`` reach attributes named by strings), no name or
  attribute that starts with an underscore (the way out through ``__class__``, ``__globals__``,
  ``__builtins__``), and none of the builtins that reach files, code or the interpreter
  (:data:`FORBIDDEN_NAMES`: ``open``, ``exec``, ``eval``, ``compile``, ``getattr``,
  ``globals``, ``input``...); those builtins are also absent when it runs, and
  ``__import__`` is the allow-list's guard;
- what it prints is kept up to ``max_output`` characters; more stops it (``output_limit``).

The parent waits at most ``wall_seconds`` and then kills the whole process group. The answer
is, in order: what ``solution()`` returns if the program defines it, the variable ``answer``,
else the last line printed. The result says why a program failed (:attr:`SandboxResult.reason`:
``ok``, ``syntax_error``, ``forbidden``, ``error``, ``memory``, ``timeout``, ``cpu_limit``,
``output_limit``, ``no_answer``, ``crashed``); nothing it does reaches the calling process.
This is defence in depth for programs a small model writes, not a boundary against a
determined attacker with kernel exploits: run training on a machine you can afford to lose
if that is the threat.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

ALLOWED_MODULES = (
    "math",
    "cmath",
    "fractions",
    "decimal",
    "statistics",
    "itertools",
    "functools",
    "collections",
    "re",
    "datetime",
    "random",
    "heapq",
    "bisect",
    "numbers",
)
FORBIDDEN_NAMES = (
    "open",
    "exec",
    "eval",
    "compile",
    "input",
    "breakpoint",
    "help",
    "globals",
    "locals",
    "vars",
    "dir",
    "getattr",
    "setattr",
    "delattr",
    "memoryview",
    "exit",
    "quit",
    "copyright",
    "credits",
    "license",
)
REASONS = (
    "ok",
    "syntax_error",
    "forbidden",
    "error",
    "memory",
    "timeout",
    "cpu_limit",
    "output_limit",
    "no_answer",
    "crashed",
)


@dataclass(frozen=True)
class SandboxResult:
    """What a contained program did: ``reason`` (one of :data:`REASONS`), ``answer`` (its
    ``repr``-free value as text, or ``None``), what it printed and a one-line ``detail``."""

    reason: str
    answer: str | None = None
    stdout: str = ""
    detail: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reason == "ok"


# The child: limits itself, checks the program, runs it with guarded builtins, reports JSON.
_RUNNER = r"""
import ast, builtins, io, json, resource, sys
limits = json.loads(sys.argv[1])
program = sys.stdin.read()
out = sys.stdout
def report(reason, answer=None, printed="", detail=""):
    out.write(json.dumps({"reason": reason, "answer": answer, "stdout": printed, "detail": detail[:300]}))
    out.flush()
    raise SystemExit(0)
cpu = limits["cpu_seconds"]
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
memory = limits["memory_bytes"]
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
allowed = set(limits["allowed_modules"])
forbidden = set(limits["forbidden_names"])
try:
    tree = ast.parse(program, mode="exec")
except (SyntaxError, ValueError, MemoryError, RecursionError) as error:
    report("syntax_error", detail=f"{type(error).__name__}: {error}")
for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for name in names:
            if name.split(".")[0] not in allowed or (isinstance(node, ast.ImportFrom) and node.level):
                report("forbidden", detail=f"import of {name!r} is not allowed (allowed: {sorted(allowed)})")
    elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
        report("forbidden", detail=f"attribute {node.attr!r} is not allowed (no names starting with '_')")
    elif isinstance(node, ast.Name) and (node.id.startswith("_") or node.id in forbidden):
        report("forbidden", detail=f"name {node.id!r} is not allowed")
    elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.name[:1] == "_":
        report("forbidden", detail=f"definition {node.name!r} is not allowed (no names starting with '_')")
    elif isinstance(node, ast.arg) and node.arg.startswith("_"):
        report("forbidden", detail=f"argument {node.arg!r} is not allowed")
real_import = builtins.__import__
def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level or name.split(".")[0] not in allowed:
        raise ImportError(f"import of {name!r} is not allowed")
    return real_import(name, globals, locals, fromlist, level)
for name in list(limits["allowed_modules"]):
    try:
        real_import(name)
    except ImportError:
        pass
safe = {k: v for k, v in vars(builtins).items() if k not in forbidden and not k.startswith("_")}
safe["__import__"] = guarded_import
safe["__build_class__"] = builtins.__build_class__
class Bounded(io.StringIO):
    def write(self, text):
        if self.tell() + len(text) > limits["max_output"]:
            raise OverflowError("output limit")
        return super().write(text)
printed = Bounded()
sys.stdout = printed
namespace = {"__builtins__": safe, "__name__": "__sandbox__"}
def answer_text(value):
    return str(value)[:200]
try:
    exec(compile(tree, "<program>", "exec"), namespace)
    if callable(namespace.get("solution")):
        value = namespace["solution"]()
        result = None if value is None else answer_text(value)
    elif "answer" in namespace:
        result = answer_text(namespace["answer"])
    else:
        lines = [line for line in printed.getvalue().splitlines() if line.strip()]
        result = lines[-1].strip() if lines else None
except OverflowError as error:
    sys.stdout = out
    report("output_limit", printed=printed.getvalue()[-200:], detail=str(error))
except MemoryError:
    sys.stdout = out
    report("memory", detail="MemoryError: the program ran out of its memory limit")
except BaseException as error:
    sys.stdout = out
    if isinstance(error, SystemExit):
        error = RuntimeError("the program called exit")
    report("error", printed=printed.getvalue()[-500:], detail=f"{type(error).__name__}: {error}")
sys.stdout = out
if result is None:
    report("no_answer", printed=printed.getvalue()[-500:], detail="no solution() value, answer, or print")
report("ok", answer=result, printed=printed.getvalue()[-500:])
"""


def run_program(
    program: str,
    *,
    cpu_seconds: int = 2,
    wall_seconds: float = 5.0,
    memory_mb: int = 512,
    max_output: int = 10_000,
    allowed_modules: tuple[str, ...] = ALLOWED_MODULES,
) -> SandboxResult:
    """Run ``program`` contained (see the module docstring) and report what happened."""
    if not isinstance(program, str):
        raise TypeError(f"program must be a string, got {type(program).__name__}")
    for name, value in (
        ("cpu_seconds", cpu_seconds),
        ("wall_seconds", wall_seconds),
        ("memory_mb", memory_mb),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    limits = {
        "cpu_seconds": int(cpu_seconds),
        "memory_bytes": int(memory_mb) << 20,
        "max_output": int(max_output),
        "allowed_modules": list(allowed_modules),
        "forbidden_names": list(FORBIDDEN_NAMES),
    }
    with tempfile.TemporaryDirectory(prefix="rlenv-sandbox-") as workdir:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _RUNNER, json.dumps(limits)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env={},
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(program.encode("utf-8", "replace"), timeout=wall_seconds)
        except subprocess.TimeoutExpired:
            return SandboxResult("timeout", detail=f"still running after {wall_seconds:g} s of wall time")
        finally:
            _kill_group(process)
    if process.returncode in (-signal.SIGXCPU, -signal.SIGKILL) and not stdout:
        return SandboxResult("cpu_limit", detail=f"over its {cpu_seconds} s of CPU time")
    try:
        report = json.loads(stdout.decode("utf-8", "replace")[-(max_output + 4096) :])
    except json.JSONDecodeError:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [
            f"exit status {process.returncode}"
        ]
        return SandboxResult("crashed", detail=tail[0][:300])
    if report.get("reason") not in REASONS:
        return SandboxResult("crashed", detail="the sandbox reported nothing usable")
    return SandboxResult(
        report["reason"], report.get("answer"), report.get("stdout") or "", report.get("detail") or ""
    )


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the child's process group (anything it started too) and reap it."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            process.kill()
    process.wait()
