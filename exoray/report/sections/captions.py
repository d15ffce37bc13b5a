"""Phase VI: the answers of each prompt version (captions, counts, tags...) under their images."""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc

from exoray.report.context import ReportContext, section, table_block

INTRO = ("Answers of the registry's prompts (`exoray interpret`), one gallery per prompt version "
         "and model, so an edited prompt (a bumped version) can be compared with the old one. "
         "Answers that could not be parsed into the prompt's output type are marked. The CSVs "
         "hold every answer.")
LABEL_CHARS = 160


def captions_section(ctx: ReportContext) -> dict[str, Any] | None:
    from exoray.prompts.outputs import prompt_records
    from exoray.prompts.report import read_answers

    records = prompt_records(ctx.store)
    if not records:
        return None
    rows, blocks = [], []
    seen = set()
    for _, record in records:
        key = f"{record['prompt_id']}@{record['version']}"
        if key in seen:  # read_answers picks the newest model id of a version
            continue
        seen.add(key)
        answers = read_answers(ctx.store, key)
        if answers.num_rows == 0:
            continue
        failed = int(pc.sum(pc.is_valid(answers["parse_error"])).as_py() or 0)
        model = answers["model_id"][0].as_py()
        rows.append([key, record.get("task", ""), model, answers.num_rows, failed])
        answers = answers.sort_by([("relpath", "ascending")])
        blocks.append(ctx.gallery(
            f"prompt_{key}", f"{key} ({model})", answers,
            note=f"prompt: {record.get('text') or record.get('prompt') or ''}"[:300],
            label=lambda r: (("⚠ " if r["parse_error"] else "")
                             + (r["raw_text"] or ""))[:LABEL_CHARS],
            csv_columns=["image_id", "prompt_id", "prompt_version", "model_id", "raw_text",
                         "value", "parse_error"]))
    if not blocks:
        return None
    head = table_block(["prompt version", "task", "model", "answers", "unparsed"], rows)
    return section("captions", "Prompted answers", INTRO, [head, *blocks])
