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
