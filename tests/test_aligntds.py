"""`shift pair --protocol aligntds` against AlignTDS's pipeline written out as its code reads (logit_analysis.py,
data_prep.py, compute_dist_diff.py, generate_html.py), on two small Llama models whose Llama-2-style tokenizer
has pieces that collide in decoded text (``▁the``/``the``, ``I``/``▁I``/``<0x49>``).

Written out here, independently of untuned's code: the aligned side reads URIAL's Llama-2-chat string with the
system message its template carries, encoded with special tokens added (two BOS); the base side AlignTDS's
fenced context, encoded the same way; the answer encoded without special tokens (a trailing "</s>" read as the
end token); one forward pass per position; each side's top 30 as (decoded text, logit), renormalised over those
30; the aligned top-1's text looked up in the base's top-10 texts with ``list.index`` (10 when absent);
``TR < 1`` unshifted, ``TR < 3`` marginal, else shifted; KL@10 over the texts in both top-10 lists. A drift in
the context string, the BOS count or the matching rule changes these numbers, and the test fails.
"""

from __future__ import annotations

import json
import math
import re

import pytest
from helpers import plain
from helpers.tiny import LLAMA2_CHAT_TEMPLATE, make_tiny_llama_sp
from typer.testing import CliRunner

from untuned import LoadOptions, load_backend
from untuned.answers import AnswerItem
from untuned.cli import app
from untuned.errors import UntunedError
from untuned.shift import ShiftAnalyzer

SYSTEM = "Be kind.\nAnswer the question: it's short."  # what LLAMA2_CHAT_TEMPLATE sets by default
ITEMS = [  # one answer the model ended (its "</s>"), one cut at the token limit (none)
    AnswerItem(id="ended", query="Is it the one?", answer="It is the other one, then the third. I think the end.</s>"),
    AnswerItem(id="cut", query="What is two plus two?", answer="Four. The other theme is there, and I"),
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    pytest.importorskip("torch", reason="the tiny reference models need the [hf] extra")
    base = make_tiny_llama_sp(tmp_path_factory.mktemp("base"), seed=5)
    aligned = make_tiny_llama_sp(tmp_path_factory.mktemp("aligned"), seed=6, chat_template=LLAMA2_CHAT_TEMPLATE)
    return base, aligned


@pytest.fixture(scope="module")
def models(folders):
    return [load_backend(str(folder), LoadOptions(device="cpu", dtype="float32")) for folder in folders]


def top30(backend, ids: list[int]) -> list[dict]:
    """logit_analysis.py at one position: the top 30 as decoded text and logit, then data_prep's norm_prob."""
    import torch

    with torch.inference_mode():
        logits = backend.model(torch.tensor([ids])).logits[0, -1].double()
    top = logits.topk(30).indices.tolist()
    tokens = [{"token": backend.tokenizer.decode(t), "logit": float(logits[t])} for t in top]
    peak = max(t["logit"] for t in tokens)
    total = sum(math.exp(t["logit"] - peak) for t in tokens)
    for token in tokens:
        token["norm_prob"] = math.exp(token["logit"] - peak) / total
    return tokens


def top_rank(base: list[dict], aligned: list[dict]) -> int:
    texts = [t["token"] for t in base[:10]]
    return texts.index(aligned[0]["token"]) if aligned[0]["token"] in texts else 10


def kl_at_10(base: list[dict], aligned: list[dict]) -> float:
    list1, list2 = [t["token"] for t in base[:10]], [t["token"] for t in aligned[:10]]
    total = 0.0
    for text in set(list1) | set(list2):
        w1 = base[list1.index(text)]["norm_prob"] if text in list1 else 0
        w2 = aligned[list2.index(text)]["norm_prob"] if text in list2 else 0
        if w1 > 0 and w2 > 0:
            total += w1 * math.log(w1 / w2)
    return total


def alignTDS(base, aligned, item: AnswerItem) -> tuple[list[str], list[float], list[int]]:
    """Categories and KL@10 per position as AlignTDS's pipeline makes them, and the aligned side's context ids."""
    aligned_input = f"<s>[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n \n {item.query} [/INST] "
    base_input = f"# Query: \n ```{item.query}``` \n\n \n# Answer: \n ```"
    aligned_ids = aligned.tokenizer.encode(aligned_input, add_special_tokens=True)
    base_ids = base.tokenizer.encode(base_input, add_special_tokens=True)
    answer = aligned.tokenizer.encode(item.answer, add_special_tokens=False)
    categories, kls = [], []
    for i in range(len(answer)):
        b, a = top30(base, base_ids + answer[:i]), top30(aligned, aligned_ids + answer[:i])
        rank = top_rank(b, a)
        categories.append("unshifted" if rank < 1 else "marginal" if rank < 3 else "shifted")
        kls.append(kl_at_10(b, a))
    return categories, kls, aligned_ids


def both_matchings(base, aligned) -> tuple[ShiftAnalyzer, ShiftAnalyzer]:
    """The aligntds protocol, and the same with tokens matched by id (the ids protocol's rule)."""
    by_text = ShiftAnalyzer.aligntds(base, aligned, top_k=3)
    by_id = ShiftAnalyzer(
        base,
        mode="pair",
        aligned=aligned,
        context="aligntds",
        ranked="aligned-top1",
        end="marked",
        match="ids",
        aligned_context=by_text.aligned_context,
    )
    return by_text, by_id


def test_the_aligntds_protocol_equals_alignTDS_pipeline_written_out(models):
    base, aligned = models
    analyzer = ShiftAnalyzer.aligntds(base, aligned, top_k=3)
    assert analyzer.settings.is_aligntds and analyzer.aligned_context.system_prompt == SYSTEM
    unshifted = 0
    for item in ITEMS:
        categories, kls, aligned_ids = alignTDS(base, aligned, item)
        assert aligned_ids[:2] == [aligned.tokenizer.bos_token_id] * 2  # "<s>" in the text and the one added
        example = analyzer.analyze(item)
        assert [t.category for t in example.tokens] == categories, item.id
        assert [t.kl_top10 for t in example.tokens] == pytest.approx(kls, abs=1e-6)
        assert example.tokens[-1].end == item.answer.endswith("</s>")  # the end scored only where it was generated
        unshifted += categories.count("unshifted")
    assert unshifted > 0  # the comparison covers agreeing positions, not only shifted ones


def test_matching_by_text_is_what_moves_the_counts(models):
    """The same run matched by id (--protocol ids' rule) counts fewer unshifted positions wherever a base top-1
    shares its text with the aligned top-1 under another id; on these models it does somewhere."""
    base, aligned = models
    by_text, by_id = both_matchings(base, aligned)
    moved = 0
    for item in ITEMS:
        text_rows, id_rows = by_text.analyze(item).tokens, by_id.analyze(item).tokens
        assert [t.id for t in text_rows] == [t.id for t in id_rows]
        assert all(t.rank <= u.rank for t, u in zip(text_rows, id_rows))
        moved += sum(t.rank < u.rank for t, u in zip(text_rows, id_rows))
    assert moved > 0


def test_the_family_and_its_system_prompt(models, folders, tmp_path):
    """The family is told from the template (or given); the system prompt comes from the template or a file; a
    model whose template says no family is refused by name; the CLI records all of it."""
    base, aligned = models
    with pytest.raises(UntunedError, match="cannot tell the prompt family of .*--aligned-family"):
        ShiftAnalyzer.aligntds(aligned, base)  # the base model's tokenizer has no chat template
    vicuna = ShiftAnalyzer.aligntds(base, aligned, family="vicuna", system_prompt="Hello.")
    assert vicuna.aligned_context.text("Q?") == "Hello.\n USER: Q? \nASSISTANT:"
    system = tmp_path / "system.txt"
    system.write_text("Answer with care.\n")
    answers = tmp_path / "a.jsonl"
    answers.write_text("".join(json.dumps({"id": i.id, "instruction": i.query, "output": i.answer}) + "\n" for i in ITEMS))
    args = ["shift", "pair", "--model", str(folders[0]), "--aligned", str(folders[1]), "--answers", str(answers)]
    result = CliRunner().invoke(app, [*args, "--aligned-system", str(system), "--out", str(tmp_path / "o"), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "protocol: aligntds (the paper's analysis)" in plain(result.output)
    settings = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert "llama-2-chat" in settings["protocol"] and "matched by decoded text" in settings["protocol"]
    refused = CliRunner().invoke(app, [*args, "--context", "plain", "--out", str(tmp_path / "r")])
    assert refused.exit_code != 0 and "--protocol aligntds fixes --context" in plain(refused.output)


def test_answers_made_for_the_protocol_are_kept_as_generated(folders, fixture_data, tmp_path):
    """`--dataset`: the aligned model answers its family's string greedily, untrimmed; an answer it ended carries
    "</s>" and has its end scored, one cut at --max-tokens has neither."""
    args = ["shift", "pair", "--model", str(folders[0]), "--aligned", str(folders[1]), "--dataset", "just-eval"]
    args += ["--data-file", str(fixture_data / "just_eval_instruct.jsonl"), "--limit", "2", "--max-tokens", "5"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o"), "--no-plots", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    examples = [json.loads(line) for line in (tmp_path / "o" / "examples.jsonl").read_text().splitlines()]
    assert len(examples) == 2
    for example in examples:  # (the text is re-encoded, as AlignTDS re-encodes it: a cut byte may count twice)
        assert example["tokens"][-1]["end"] == example["answer"].endswith("</s>")
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["answers_sampling"]["max_tokens"] == 5 and summary["answers_sampling"]["temperature"] == 0


def test_text_matching_needs_pair_mode_ranking_the_aligned_top1(models):
    base, aligned = models
    with pytest.raises(UntunedError, match="matching by text"):
        ShiftAnalyzer(base, mode="text", match="text")
    with pytest.raises(UntunedError, match="matching by text"):
        ShiftAnalyzer(base, mode="pair", aligned=aligned, ranked="answer", match="text")


def test_the_worked_example_in_the_docs(models):
    """docs/shift.md's worked example: its counts and mean KL@10 under both matchings, recomputed."""
    from collections import Counter

    from helpers import ROOT

    base, aligned = models
    by_text, by_id = both_matchings(base, aligned)
    rows = re.findall(
        r"^\| (aligntds|ids) \| (\d+) \| (\d+) / (\d+) / (\d+) \| ([\d.]+) \|$", (ROOT / "docs" / "shift.md").read_text(), re.M
    )
    assert [row[0] for row in rows] == ["aligntds", "ids"]
    for (_, positions, *counts, kl), analyzer in zip(rows, (by_text, by_id)):
        tokens = [t for item in ITEMS for t in analyzer.analyze(item).tokens]
        seen = Counter(t.category for t in tokens)
        assert len(tokens) == int(positions)
        assert [seen["unshifted"], seen["marginal"], seen["shifted"]] == [int(c) for c in counts]
        assert sum(t.kl_top10 for t in tokens) / len(tokens) == pytest.approx(float(kl), abs=5e-5)


def test_options_of_the_other_protocol_are_refused_before_a_model_loads(folders, tmp_path):
    """--aligned-family/--aligned-system belong to aligntds, --protocol to pair mode: each refused by name."""
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"id": "1", "instruction": "Q?", "output": "A."}) + "\n")
    pair = ["shift", "pair", "--model", str(folders[0]), "--aligned", str(folders[1]), "--answers", str(answers)]
    ids = CliRunner().invoke(app, [*pair, "--protocol", "ids", "--aligned-family", "vicuna", "--out", str(tmp_path / "i")])
    assert ids.exit_code == 2 and "--aligned-family and --aligned-system belong to --protocol aligntds" in plain(ids.output)
    text = ["shift", "text", "--model", str(folders[0]), "--answers", str(answers), "--protocol", "aligntds"]
    refused = CliRunner().invoke(app, [*text, "--out", str(tmp_path / "t")])
    assert refused.exit_code == 2 and "--protocol applies to pair mode" in plain(refused.output)


def test_an_aligned_likelihood_needs_a_chat_template(models):
    from untuned.curve import aligned_nlls
    from untuned.prompt import Example

    base, _ = models
    with pytest.raises(UntunedError, match="has no chat template: --aligned takes an instruct model"):
        aligned_nlls(base, [Example(query="Q?", answer="A.")])
