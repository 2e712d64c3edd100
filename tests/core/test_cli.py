"""``cds evaluate`` through the installed entry point (``main()``), as a user runs it: exit codes,
stdout JSON, one-line errors naming the file, no tracebacks, and ``--help`` documenting every option.

Every command runs as a real subprocess; they are started together (module fixture) to keep the
folder fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from cds.cli import cli
from cds.cli.evaluate import evaluate as evaluate_command

from .conftest import (
    EGFR,
    METFORMIN_SCD,
    NOW,
    bundle,
    medreq,
    obs,
    request,
    sir_fires,
)

CDS = Path(sys.executable).with_name("cds")
HOOKS = ("patient-view", "order-select", "order-sign")


@dataclass
class Run:
    args: list[str]
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)


def _files(folder: Path) -> dict[str, Path]:
    """Write every input file the CLI tests use; return name -> path."""
    files: dict[str, object | bytes | None] = {}
    fires = sir_fires()
    for hook in HOOKS:
        drafts = [medreq(METFORMIN_SCD, status="draft", rid="draft-1")]
        resources = [entry["resource"] for entry in fires["entry"][1:]]
        files[f"request-{hook}.json"] = request(hook, *resources, drafts=drafts)
    files["bundle.json"] = bundle(*[entry["resource"] for entry in fires["entry"][1:]],
                                  medreq(METFORMIN_SCD, status="draft"), pt=fires["entry"][0]["resource"])
    bad_obs = obs(EGFR, "abc", "mL/min/{1.73_m2}", 10, rid="bad-egfr")
    files["invalid-resource.json"] = bundle(bad_obs)
    no_context = request("patient-view")
    del no_context["context"]
    files["no-context.json"] = no_context
    files["not-fhir.json"] = {"name": "a shopping list", "items": ["milk"]}
    files["not-json.json"] = b"{this is not json"
    files["not-utf8.json"] = b"\xff\xfe\x00garbage"
    files["empty.json"] = b""
    paths = {}
    for name, content in files.items():
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
        paths[name] = path
    paths["missing.json"] = folder / "missing.json"
    paths["folder"] = folder
    return paths


def _commands(p: dict[str, Path]) -> dict[str, list[str]]:
    now = ["--now", NOW]
    cmds: dict[str, list[str]] = {}
    for hook in HOOKS:
        cmds[f"request-{hook}"] = ["evaluate", str(p[f"request-{hook}.json"]), *now]
        if hook != "patient-view":
            cmds[f"bundle-{hook}"] = ["evaluate", str(p["bundle.json"]), "--hook", hook, *now, "--compact"]
    cmds["bundle-patient-view"] = ["evaluate", str(p["bundle.json"]), *now]  # default hook, pretty
    cmds["hook-mismatch"] = ["evaluate", str(p["request-patient-view.json"]), "--hook", "order-sign", *now]
    for name in ("invalid-resource", "no-context", "not-fhir", "not-json", "not-utf8", "empty", "missing"):
        cmds[name] = ["evaluate", str(p[f"{name}.json"]), *now]
    cmds["directory"] = ["evaluate", str(p["folder"]), *now]
    cmds["bad-now"] = ["evaluate", str(p["bundle.json"]), "--now", "next tuesday"]
    cmds["bad-hook"] = ["evaluate", str(p["bundle.json"]), "--hook", "encounter-start"]
    cmds["help"] = ["--help"]
    cmds["evaluate-help"] = ["evaluate", "--help"]
    return cmds


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    folder = tmp_path_factory.mktemp("cli")
    cmds = _commands(_files(folder))
    env = {k: v for k, v in os.environ.items() if k != "CDS_DEBUG"}

    def run(args: list[str]) -> Run:
        done = subprocess.run([str(CDS), *args], capture_output=True, text=True, timeout=120, env=env)
        return Run(args, done.returncode, done.stdout, done.stderr)

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run, args) for name, args in cmds.items()}
        return {name: future.result() for name, future in futures.items()}


def test_entry_point_exists() -> None:
    assert CDS.exists(), f"{CDS} not installed (pip install -e .)"


@pytest.mark.parametrize("hook", HOOKS)
def test_evaluate_request_for_each_hook(runs, hook) -> None:
    run = runs[f"request-{hook}"]
    assert run.code == 0, run.stderr
    body = run.json
    assert isinstance(body["cards"], list)
    topics = {card["source"]["topic"]["code"] for card in body["cards"]}
    # sir-suspected is a patient-view rule (rulesets/rules/sir-suspected.yaml hooks)
    assert ("sir-suspected" in topics) is (hook == "patient-view")
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("hook", HOOKS)
def test_evaluate_bare_bundle_for_each_hook(runs, hook) -> None:
    """patient-view is the default hook of a bare Bundle (run without --hook, pretty JSON by default)."""
    run = runs[f"bundle-{hook}"]
    assert run.code == 0, run.stderr
    if hook == "patient-view":
        assert run.stdout.startswith("{\n")
    else:
        assert "\n" not in run.stdout.strip()  # --compact
    topics = {card["source"]["topic"]["code"] for card in run.json["cards"]}
    assert ("sir-suspected" in topics) is (hook == "patient-view")


def test_card_json_is_cds_hooks_shaped(runs) -> None:
    [card] = [c for c in runs["request-patient-view"].json["cards"] if c["source"]["topic"]["code"] == "sir-suspected"]
    assert card["indicator"] == "warning"
    assert len(card["summary"]) < 140 and "228" in card["summary"]
    assert card["source"]["label"]


BAD_FILES = {
    # run name: words the single error line must contain (besides the file name)
    "not-json": ["not JSON"],
    "not-utf8": [],
    "empty": [],
    "not-fhir": [],
    "no-context": ["context"],
    "invalid-resource": ["Observation/bad-egfr", "valueQuantity"],
    "missing": [],
    "hook-mismatch": ["patient-view", "order-sign"],
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_exits_2_with_one_clear_line(runs, name) -> None:
    run = runs[name]
    assert run.code == 2, (run.stdout, run.stderr)
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    file_name = Path(run.args[1]).name
    assert file_name in lines[0]
    for word in BAD_FILES[name]:
        assert word in lines[0]


def test_directory_instead_of_file_is_a_usage_error(runs) -> None:
    run = runs["directory"]
    assert run.code == 2
    assert "Traceback" not in run.stderr
    assert "directory" in run.stderr.lower()


def test_invalid_now_is_a_usage_error(runs) -> None:
    run = runs["bad-now"]
    assert run.code == 2
    assert "--now" in run.stderr and "next tuesday" in run.stderr
    assert "Traceback" not in run.stderr


def test_invalid_hook_is_a_usage_error(runs) -> None:
    run = runs["bad-hook"]
    assert run.code == 2
    assert "--hook" in run.stderr and "Traceback" not in run.stderr


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden and p.name != "help"]


@pytest.mark.parametrize(("run_name", "command"), [("help", cli), ("evaluate-help", evaluate_command)])
def test_help_documents_every_option_with_an_example(runs, run_name, command) -> None:
    run = runs[run_name]
    assert run.code == 0
    text = run.stdout
    assert "Example" in text
    for option in _options(command):
        for flag in option.opts + option.secondary_opts:
            assert flag in text, f"{flag} missing from --help"
        assert "Example" in (option.help or ""), f"{option.opts[0]} has no example in its help"


def test_group_help_lists_evaluate(runs) -> None:
    assert "evaluate" in runs["help"].stdout
    assert "cds evaluate" in runs["help"].stdout


def test_bench_without_bundles_says_where_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cds.cli.bench import _default_bundles

    monkeypatch.chdir(tmp_path)
    with pytest.raises(click.UsageError) as caught:
        _default_bundles(tmp_path / "shared" / "data" / "synthea-r4")
    message = caught.value.message
    assert "--bundles DIR" in message and "Synthea" in message and "fhir_samples/bundles" in message
    (tmp_path.parent / "shared" / "data" / "synthea-r4").mkdir(parents=True, exist_ok=True)
    assert _default_bundles(tmp_path / "nowhere") == tmp_path.parent / "shared" / "data" / "synthea-r4"
