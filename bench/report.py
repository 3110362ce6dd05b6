"""bench/results.md: the notes, then a section for each benchmark whose JSON is in OUT.

Each benchmark writes its own JSON (``make bench``: results.json on SQLite and
results-postgresql.json on PostgreSQL; ``python -m bench.scale``: results-scale.json;
``python -m bench.burst``: results-burst.json) and then results.md is rendered from all of them,
so one run does not erase another's figures.
"""
import json
import os

from bench import procs


def sections():
    from bench import burst, harness, scale
    return [("results.json", harness.markdown_section),
            ("results-postgresql.json", harness.markdown_section),
            ("results-postgresql-sync-off.json", harness.markdown_section),
            ("results-scale.json", scale.markdown_section),
            ("results-burst.json", burst.markdown_section)]


def render(out, notes_path):
    lines = ["# KnowledgeNest benchmarks", ""]
    if notes_path and os.path.exists(notes_path):
        with open(notes_path) as notes:
            lines += [notes.read().strip(), ""]
    for filename, section in sections():
        path = os.path.join(out, filename)
        if os.path.exists(path):
            with open(path) as source:
                lines += [section(json.load(source)), ""]
    return "\n".join(lines).rstrip() + "\n"


def write(out, notes_path):
    text = render(out, notes_path)
    with open(os.path.join(out, "results.md"), "w") as target:
        target.write(text)
    return text


def save(out, filename, result, notes_path):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, filename), "w") as target:
        target.write(procs.dump(result) + "\n")
    return write(out, notes_path)


def run_main(argv, prog, doc, bench_class, filename, markdown_section, check_complete,
             quick_help="small sizes", here=os.path.dirname(os.path.abspath(__file__))):
    """The command line of a benchmark module (bench.scale, bench.burst): parse, run, save the
    JSON, render results.md, print the section; exit status 1 when a figure is missing."""
    import argparse
    import sys
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--runs", type=int, default=3, help="rounds (at least 3)")
    parser.add_argument("--out", default=here, help=f"where {filename} goes (bench/)")
    parser.add_argument("--notes", default=os.path.join(here, "NOTES.md"))
    args = parser.parse_args(argv)
    args.runs = max(3, args.runs)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    result = bench_class(args).run()
    result["machine"]["load_average_at_start"] = load_at_start
    save(args.out, filename, result, args.notes)
    print(markdown_section(result))
    missing = check_complete(result)
    if missing:
        print("figures missing: " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0
