"""The PAL sandbox contains hostile programs: each gets a clear reason and leaves this process alone."""

from __future__ import annotations

import os
import threading

import pytest

from rlenv.tools.sandbox import ALLOWED_MODULES, run_program

HOSTILE = {
    "infinite loop": ("while True:\n    pass\n", "cpu_limit"),
    "fork bomb": ("import os\nwhile True:\n    os.fork()\n", "forbidden"),
    "10 GB allocation": ("block = bytearray(10 * 1024 ** 3)\nanswer = len(block)\n", "memory"),
    "huge list": ("answer = len([0] * (10 ** 10))\n", "memory"),
    "file write": ("open('/etc/passwd', 'w').write('owned')\n", "forbidden"),
    "network socket": ("import socket\nsocket.create_connection(('10.0.0.1', 80))\n", "forbidden"),
    "import os": ("import os\nanswer = os.getcwd()\n", "forbidden"),
    "import subprocess": ("import subprocess\nsubprocess.run(['true'])\n", "forbidden"),
    "import ctypes": ("import ctypes\n", "forbidden"),
    "from-import": ("from os import path\n", "forbidden"),
    "importlib": ("import importlib\nimportlib.import_module('os')\n", "forbidden"),
    "attribute getter": ("import operator\nanswer = operator.attrgetter('__class__')(1)\n", "forbidden"),
    "output flood": ("while True:\n    print('x' * 1000)\n", "output_limit"),
    "dunder escape": ("answer = ().__class__.__base__.__subclasses__()\n", "forbidden"),
    "builtins": ("answer = __builtins__\n", "forbidden"),
    "eval": ("answer = eval('1 + 1')\n", "forbidden"),
    "getattr": ("answer = getattr(1, '__class__')\n", "forbidden"),
    "exit": ("raise SystemExit(3)\n", "error"),
    "syntax": ("def solution(:\n", "syntax_error"),
    "huge integer": ("answer = 10 ** (10 ** 9)\n", "cpu_limit"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_contained_with_a_reason(name, tmp_path):
    program, reason = HOSTILE[name]
    before = (os.getcwd(), threading.active_count(), dict(os.environ))
    result = run_program(program, cpu_seconds=1, wall_seconds=10)
    assert result.reason == reason, (result.reason, result.detail)
    assert result.answer is None and result.detail
    assert (os.getcwd(), threading.active_count(), dict(os.environ)) == before


def test_the_refused_write_left_the_file_alone():
    if not os.path.exists("/etc/passwd"):
        pytest.skip("no /etc/passwd here")
    before = open("/etc/passwd", "rb").read()
    run_program("open('/etc/passwd', 'w').write('owned')\n")
    assert open("/etc/passwd", "rb").read() == before


@pytest.mark.parametrize(
    ("program", "answer"),
    [
        ("def solution():\n    apples = 14 + 9\n    return apples - 5\n", "18"),
        ("import math\nanswer = math.gcd(12, 18)\n", "6"),
        ("from fractions import Fraction\nprint(Fraction(3, 4) * 4)\n", "3"),
        ("class Box:\n    def __init__(self, n):\n        self.n = n\nanswer = Box(7).n\n", None),
    ],
)
def test_honest_programs_run_and_report_their_answer(program, answer):
    result = run_program(program)
    if answer is None:  # __init__ is a name starting with '_': refused, with the reason
        assert result.reason == "forbidden" and "__init__" in result.detail
        return
    assert result.ok and result.answer == answer, result


def test_wall_time_limit_kills_the_process_group():
    result = run_program("while True:\n    pass\n", cpu_seconds=30, wall_seconds=1.0)
    assert result.reason == "timeout"


def test_limits_are_checked():
    with pytest.raises(ValueError, match="cpu_seconds must be > 0"):
        run_program("answer = 1", cpu_seconds=0)
    with pytest.raises(TypeError, match="program must be a string"):
        run_program(b"answer = 1")  # type: ignore[arg-type]
    assert "os" not in ALLOWED_MODULES and "math" in ALLOWED_MODULES
