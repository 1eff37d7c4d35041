"""Reading the supervisor's verdict: file, structured output, VERDICT line, exit code; fail closed."""

from __future__ import annotations

from orchestrator.verdict import CONTINUE, INTERVENTION, SUCCESS, read_verdict


def verdict(tmp_path, output="", code=0, file=None, structured=None, by_exit=True):
    path = tmp_path / "verdict.json"
    if file is not None:
        path.write_text(file)
    return read_verdict(output, code, path, structured, judge_by_exit_code=by_exit)


def test_the_verdict_file_wins(tmp_path):
    found = verdict(tmp_path, "VERDICT: SUCCESS", 0, '{"verdict": "continue", "reason": "r", "feedback": "f"}')
    assert (found.verdict, found.reason, found.feedback, found.source) == (CONTINUE, "r", "f", "verdict file")


def test_structured_output_then_json_output_then_a_verdict_line(tmp_path):
    assert verdict(tmp_path, structured={"verdict": "SUCCESS"}).verdict == SUCCESS
    assert verdict(tmp_path, '{"verdict": "INTERVENTION_REQUIRED", "reason": "ask"}').reason == "ask"
    line = verdict(tmp_path, "ran the tests\nVERDICT: CONTINUE - two tests fail\n", 0)
    assert (line.verdict, line.reason) == (CONTINUE, "two tests fail")


def test_a_command_without_a_verdict_is_judged_by_its_exit_code(tmp_path):
    assert verdict(tmp_path, "ok", 0).verdict == SUCCESS
    failed = verdict(tmp_path, "FAILED test_x", 1)
    assert (failed.verdict, failed.feedback) == (CONTINUE, "FAILED test_x")


def test_anything_unreadable_needs_a_human(tmp_path):
    assert verdict(tmp_path, file="{not json").verdict == INTERVENTION
    assert verdict(tmp_path, file='{"verdict": "MAYBE"}').verdict == INTERVENTION
    assert verdict(tmp_path, "VERDICT: PERHAPS").verdict == INTERVENTION
    assert verdict(tmp_path, "no verdict here", 0, by_exit=False).verdict == INTERVENTION
    assert verdict(tmp_path, structured={"oops": 1}).verdict == INTERVENTION
