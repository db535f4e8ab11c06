"""`agentheal eval run [PATH...] [--json FILE] [--markdown FILE] [--llm URL]` and `agentheal eval schema`.

Exit codes: 0 every fault scenario healed, no wrong action and every control clean; 1 otherwise
(or interrupted); 2 bad input (a scenario file that breaks the schema or does not fit its
estate, a bad flag). The JSON document is rewritten after each scenario.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from agentheal.cli._common import EXIT_NOT_HEALED, EXIT_OK, _fail, app

eval_app = typer.Typer(
    help="Score detection and healing on scenarios of real faults in real estates.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")


def _interrupt(signum: int, frame: Any) -> None:
    # Once: the scenario's estate is being stopped, and a second Ctrl-C must not cut that short.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise KeyboardInterrupt


@eval_app.command("run")
def eval_run(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Scenario files, or folders of them (eval/ means eval/scenarios); default: "
            "eval/scenarios here, else the scenarios installed with agentheal.",
            show_default=False,
        ),
    ] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    markdown_file: Annotated[
        Path | None, typer.Option("--markdown", help="Write the report as Markdown here.")
    ] = None,
    llm: Annotated[
        str | None, typer.Option("--llm", help="An OpenAI-compatible endpoint: heal with live LLM agents.")
    ] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress lines.")] = False,
) -> None:
    """Run the scenarios one after another, each on a fresh copy of its estate, and score them."""
    from rich.console import Console

    from agentheal.eval.report import markdown, table
    from agentheal.eval.results import ScenarioResult
    from agentheal.eval.runner import check_estates, document, run_suite, write_json
    from agentheal.eval.scenario import ScenarioError, find_scenarios

    if llm is not None and not llm.startswith(("http://", "https://")):
        _fail(f"--llm {llm!r}: give the endpoint's URL, e.g. http://127.0.0.1:11434/v1")
    if not paths:
        from agentheal.config import package_data

        here = Path("eval/scenarios")
        paths = [here if here.is_dir() else package_data("eval/scenarios")]
    try:
        items = [item for path in paths for item in find_scenarios(path)]
        names = [i.scenario.name for i in items]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ScenarioError(f"scenario names given more than once: {', '.join(twice)}")
        check_estates(items)
    except ScenarioError as exc:
        _fail(str(exc))
    console = Console(stderr=True, highlight=False)
    began = time.time()

    def say(line: str) -> None:
        if not quiet:
            console.print(f"{time.time() - began:7.1f}s {line}", markup=False, soft_wrap=True)

    results: list[ScenarioResult] = []
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupted = False
    try:
        run_suite(items, llm, json_file, say, on_result=results.append)
    except KeyboardInterrupt:
        interrupted = True
        console.print(f"interrupted after {len(results)} of {len(items)} scenario(s); the estate was stopped")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    doc = document(results, "llm" if llm else "offline", llm, began)
    if interrupted:
        doc["run"]["interrupted"] = True
    if json_file is not None:
        write_json(json_file, doc)
    if markdown_file is not None:
        markdown_file.parent.mkdir(parents=True, exist_ok=True)
        markdown_file.write_text(markdown(doc), encoding="utf-8")
    Console(highlight=False).print(table(doc))
    for f in (json_file, markdown_file):
        if f is not None:
            console.print(f"wrote {f}")
    good = all(r.healed and not r.wrong_actions for r in results) and len(results) == len(items)
    raise typer.Exit(EXIT_OK if good and not interrupted else EXIT_NOT_HEALED)


@eval_app.command("schema")
def eval_schema(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write it here instead of standard output.")
    ] = None,
) -> None:
    """The JSON Schema of a scenario file (published as eval/scenario.schema.json)."""
    import json

    from agentheal.eval.scenario import export_schema, scenario_schema

    if out is None:
        sys.stdout.write(json.dumps(scenario_schema(), indent=2, sort_keys=True) + "\n")
    else:
        export_schema(out)
    raise typer.Exit(EXIT_OK)


@eval_app.command("retrieval")
def eval_retrieval(
    folder: Annotated[
        Path,
        typer.Argument(help="A retrieval set: records.jsonl and queries.jsonl (default eval/retrieval)."),
    ] = Path("eval/retrieval"),
    weights: Annotated[
        str | None,
        typer.Option("--weights", help="Hybrid weights to compare, e.g. 0.3,0.5,0.7 (default: the setting)."),
    ] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the scores as JSON here.")] = None,
    markdown_file: Annotated[
        Path | None, typer.Option("--markdown", help="Write the table as Markdown here.")
    ] = None,
) -> None:
    """hit@1/3/5 of lexical, dense and hybrid memory search on a retrieval set (its Markdown table)."""
    import json

    from agentheal.memory_eval import RetrievalSetError, evaluate, markdown

    chosen: list[float] | None = None
    if weights is not None:
        try:
            chosen = [float(w) for w in weights.split(",") if w.strip()]
        except ValueError:
            _fail(f"--weights {weights!r}: give numbers between 0 and 1, separated by commas")
        if not chosen or any(not 0 <= w <= 1 for w in chosen):
            _fail(f"--weights {weights!r}: give numbers between 0 and 1, separated by commas")
    try:
        scores = evaluate(folder, chosen)
    except RetrievalSetError as exc:
        _fail(str(exc))
    table = markdown(scores)
    sys.stdout.write(table + "\n")
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps([s.model_dump(mode="json") for s in scores], indent=2) + "\n")
    if markdown_file is not None:
        markdown_file.parent.mkdir(parents=True, exist_ok=True)
        markdown_file.write_text(table + "\n", encoding="utf-8")
    raise typer.Exit(EXIT_OK)
