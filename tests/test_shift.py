"""Token distribution shift: exact against a per-position reference, and real runs on gemma."""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import pytest
from helpers import plain
from helpers.tiny import CHAT_TEMPLATE, CORPUS, make_tiny_llama
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from untuned import LoadOptions, load_backend
from untuned.answers import AnswerItem, read_answers, read_tags
from untuned.cli import app
from untuned.errors import UntunedError
from untuned.prompt import load_prompt
from untuned.shift import (
    ShiftAnalyzer,
    ShiftExample,
    TokenShift,
    run_shift,
    summarize,
    write_outputs,
)

ITEMS = [
    AnswerItem(
        id="a", query="What is the capital of France?", answer=" ".join(CORPUS) * 2, dataset="d1", tags={"topics": ["geo"]}
    ),
    AnswerItem(id="b", query="What is two plus two?", answer="Four. The capital of France is Paris.", dataset="d2"),
]


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    pytest.importorskip("torch", reason="the tiny reference models need the [hf] extra")
    return [make_tiny_llama(tmp_path_factory.mktemp(f"tiny{seed}"), seed=seed, init_range=0.5) for seed in (1, 2)]


@pytest.fixture(scope="module")
def tiny_pair(tiny_folders):
    return [load_backend(str(folder), LoadOptions(device="cpu")) for folder in tiny_folders]


def reference(backend, ids: list[int], position: int):
    """The original analysis: one forward pass over the whole prefix for each position, no cache."""
    import torch

    with torch.inference_mode():
        logits = backend.model(torch.tensor([ids[:position]])).logits[0, -1].double()
    logprobs = torch.log_softmax(logits, dim=-1).numpy()
    target = ids[position]
    return logprobs, int((logprobs > logprobs[target]).sum()) + 1


def test_pair_mode_equals_the_per_position_reference(tiny_pair):
    """The answer's own tokens ranked (--rank answer), the query shown plain to both: every position against
    one forward pass per position."""
    base, aligned = tiny_pair
    analyzer = ShiftAnalyzer(base, mode="pair", aligned=aligned, top_k=3, ranked="answer")
    checked = 0
    for item in ITEMS:
        example = analyzer.analyze(item)
        context = base.tokenize(f"{item.query}\n\n", add_special=True)
        ids = context + base.tokenize(item.answer)
        assert len(example.tokens) == len(ids) - len(context) and not example.truncated
        for token in example.tokens:
            position = len(context) + token.index
            base_lp, base_rank = reference(base, ids, position)
            aligned_lp, aligned_rank = reference(aligned, ids, position)
            assert token.id == ids[position]
            assert token.rank == base_rank and token.aligned_rank == aligned_rank
            assert token.prob == pytest.approx(np.exp(base_lp[ids[position]]), abs=1e-5)
            assert token.aligned_prob == pytest.approx(np.exp(aligned_lp[ids[position]]), abs=1e-5)
            kl = float((np.exp(aligned_lp) * (aligned_lp - base_lp)).sum())
            assert token.kl == pytest.approx(kl, abs=1e-5)
            assert [t.id for t in token.top] == list(np.argsort(-base_lp, kind="stable")[:3])
            checked += 1
    assert checked > 70  # crosses the 64-position scoring chunk
    ranks = Counter(t.category for t in analyzer.analyze(ITEMS[0]).tokens)
    assert len(ranks) >= 2  # random models: the categories are really exercised


def test_truncation_is_recorded(tiny_folders, caplog):
    base = load_backend(str(tiny_folders[0]), LoadOptions(device="cpu", n_ctx=64))
    analyzer = ShiftAnalyzer(base, mode="text")
    with caplog.at_level(logging.WARNING):
        example = analyzer.analyze(ITEMS[0])
    context = len(base.tokenize(f"{ITEMS[0].query}\n\n", add_special=True))
    assert example.truncated and len(example.tokens) == 64 - context < example.answer_tokens
    assert "answer cut" in caplog.text


def test_different_tokenizers_are_refused(gemma, smollm_path):
    smollm = load_backend(str(smollm_path))
    with pytest.raises(UntunedError, match="--mode text"):
        ShiftAnalyzer(gemma, mode="pair", aligned=smollm)


def test_modes_refuse_what_they_cannot_do():
    gemma = load_backend("scripted:base")
    with pytest.raises(UntunedError, match="needs a second backend"):
        ShiftAnalyzer(gemma, mode="pair")
    with pytest.raises(UntunedError, match="the base again, or the same one"):
        ShiftAnalyzer(gemma, mode="context", prompt=load_prompt("helpful"))
    with pytest.raises(UntunedError, match="needs a prompt set"):
        ShiftAnalyzer(gemma, mode="text", context="urial")


def test_summary_of_a_hand_made_run():
    def tokens(categories: str) -> list[TokenShift]:
        rank = {"u": 1, "m": 2, "s": 9}
        names = {"u": "unshifted", "m": "marginal", "s": "shifted"}
        return [
            TokenShift(index=i, id=i, text=f"t{c}", rank=rank[c], prob=0.5, category=names[c]) for i, c in enumerate(categories)
        ]

    common = {"mode": "text", "query": "q", "answer": "a"}
    examples = [
        ShiftExample(id="1", dataset="x", tags={"topics": ["math"]}, tokens=tokens("uuss"), answer_tokens=4, **common),
        ShiftExample(id="2", dataset="y", tokens=tokens("umuuuuuuuu"), answer_tokens=10, **common),
    ]
    summary = summarize(examples, mode="text", base="b", aligned=None, context="plain")
    assert summary.overall.tokens == 14
    assert summary.overall.ratios == pytest.approx({"unshifted": 11 / 14, "marginal": 1 / 14, "shifted": 2 / 14})
    assert summary.by_dataset["x"].ratios["shifted"] == 0.5 and summary.by_tag["topics"]["math"].examples == 1
    assert [(b.label, b.tokens) for b in summary.by_position] == [("0-7", 12), ("8-15", 2)]
    assert summary.by_position[0].shifted == pytest.approx(2 / 12)
    assert summary.top_shifted[0].text == "ts" and summary.top_shifted[0].count == 2 and summary.top_shifted[0].share == 1.0


@pytest.fixture(scope="module")
def reference_answers(fixture_data):
    items = read_answers(
        fixture_data / "reference_outputs" / "gpt-4-0613.jsonl", tags=read_tags(fixture_data / "just_eval_instruct.jsonl")
    )
    return items[:3]


@pytest.mark.slow
def test_text_run_on_gemma_writes_everything(gemma, reference_answers, tmp_path):
    analyzer = ShiftAnalyzer(gemma, mode="text", context="urial", prompt=load_prompt("helpful"))
    examples = run_shift(analyzer, reference_answers, tmp_path).records
    summary = write_outputs(examples, tmp_path, analyzer.settings, tokens="parquet")
    assert sum(summary.overall.ratios.values()) == pytest.approx(1.0)
    for example in examples:
        assert sum(example.ratios().values()) == pytest.approx(1.0) and example.tokens
    assert summary.overall.ratios["unshifted"] > 0.4  # gemma predicts most of GPT-4's tokens
    assert "task_types" in summary.by_tag and summary.by_dataset
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "tokens.parquet")
    assert table.num_rows == summary.overall.tokens and set(table.column("category").to_pylist()) <= {
        "unshifted",
        "marginal",
        "shifted",
    }
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["overall"]["tokens"] == summary.overall.tokens
    for name in ("categories", "position", "top_shifted"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    calls = []
    again = run_shift(analyzer, reference_answers, tmp_path, on_start=calls.append).records
    assert calls == [0] and [e.id for e in again] == [e.id for e in examples]  # resumed: nothing redone
    other = ShiftAnalyzer(gemma, mode="text", context="plain")
    with pytest.raises(UntunedError, match="other settings"):
        run_shift(other, reference_answers, tmp_path)


@pytest.mark.slow
def test_context_run_and_viewer_in_chromium(gemma, gemma_path, tmp_path, browser):
    from untuned.backends import Sampling
    from untuned.backends.llamacpp import LlamaCppBackend
    from untuned.data import Item
    from untuned.pipeline.shift import generate_answers

    backend = LlamaCppBackend(gemma_path, n_ctx=4096)
    prompt = load_prompt("helpful")

    questions = [
        Item(id="q1", turns=("What is the capital of France?",), dataset="demo"),
        Item(id="q2", turns=("Name a primary colour.",), dataset="demo"),
    ]
    items = generate_answers(gemma, questions, context="urial", prompt=prompt, sampling=Sampling(max_tokens=40))
    analyzer = ShiftAnalyzer(gemma, mode="context", aligned=backend, prompt=prompt)
    examples = run_shift(analyzer, items, tmp_path).records
    summary = write_outputs(examples, tmp_path, analyzer.settings)
    assert sum(summary.overall.ratios.values()) == pytest.approx(1.0)
    assert summary.overall.mean_kl is not None and summary.overall.mean_kl > 0
    assert all(t.kl >= 0 and t.aligned_rank >= 1 for e in examples for t in e.tokens)
    backend.close()

    page = browser.new_page()
    page.goto((tmp_path / "shift.html").as_uri())
    page.wait_for_selector(".answer .tok")
    spans = page.locator(".answer .tok")
    assert spans.count() == len(examples[0].tokens)
    colours = set(page.eval_on_selector_all(".answer .tok", "els => els.map(e => getComputedStyle(e).backgroundColor)"))
    assert len(colours) == len({t.category for t in examples[0].tokens})  # one colour per category shown
    legend = page.eval_on_selector_all(".legend .tok", "els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert len(set(legend)) == 3
    assert page.locator("tr.example").count() == 2
    page.hover(".answer .tok >> nth=0")
    assert "base top-k" in page.inner_text("#tip")
    page.close()


def test_cli_shift_text_and_errors(fixture_data, tmp_path):
    runner = CliRunner()
    answers = fixture_data / "reference_outputs" / "Mistral-7B-Instruct-v0.1.jsonl"
    result = runner.invoke(
        app,
        [
            "shift",
            "text",
            "--answers",
            str(answers),
            "--limit",
            "2",
            "--out",
            str(tmp_path / "o"),
            "--no-plots",
            "--model",
            "scripted:shift",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "unshifted" in result.output and (tmp_path / "o" / "tokens.jsonl").exists()
    rows = [json.loads(line) for line in (tmp_path / "o" / "tokens.jsonl").read_text().splitlines()]
    assert {row["example"] for row in rows} == {"0", "1"} and all(len(row["top_ids"]) == 5 for row in rows)
    for args, message in [
        (["shift", "pair", "--answers", str(answers), "--out", str(tmp_path / "p")], "--aligned"),
        (["shift", "text", "--out", str(tmp_path / "p")], "--answers"),
        (
            ["shift", "sideways", "--answers", str(answers), "--out", str(tmp_path / "p")],
            "'sideways' is not one of 'text', 'pair', 'context'",
        ),
        (
            ["shift", "text", "--answers", str(answers), "--out", str(tmp_path / "p"), "--context", "fancy"],
            "'fancy' is not one of 'plain', 'urial', 'aligntds'",
        ),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in plain(result.output), result.output


def test_batched_text_mode_equals_one_at_a_time(tiny_pair, tmp_path):
    base = tiny_pair[0]
    analyzer = ShiftAnalyzer(base, mode="text", top_k=3)
    work = [*ITEMS, AnswerItem(id="c", query="Hi", answer="Paris."), AnswerItem(id="d", query="Empty?", answer="")]
    batched = analyzer.analyze_many(work)  # right-padded, lengths 4 to 100+
    for item, together in zip(work, batched):
        alone = analyzer.analyze(item)
        assert [t.rank for t in together.tokens] == [t.rank for t in alone.tokens]
        assert [t.prob for t in together.tokens] == pytest.approx([t.prob for t in alone.tokens], abs=1e-5)
        assert [[x.id for x in t.top] for t in together.tokens] == [[x.id for x in t.top] for t in alone.tokens]
    assert batched[3].tokens == [] and not batched[3].truncated
    examples = run_shift(analyzer, work, tmp_path, batch_size=3).records
    assert [e.id for e in examples] == ["a", "b", "c", "d"]


def test_pair_mode_shows_the_aligned_model_its_own_chat_template(tiny_folders, tmp_path):
    """As the original analysis does: the aligned model's distribution is taken with the answer inside
    its chat template, the base model's with the plain query; positions matched on the answer."""
    templated = make_tiny_llama(tmp_path / "aligned", seed=2, init_range=0.5, chat_template=CHAT_TEMPLATE)
    base = load_backend(str(tiny_folders[0]), LoadOptions(device="cpu"))
    aligned = load_backend(str(templated), LoadOptions(device="cpu"))
    analyzer = ShiftAnalyzer(base, mode="pair", aligned=aligned, aligned_template=True, top_k=3, ranked="answer")
    assert analyzer.settings.aligned_template
    item = ITEMS[1]
    example = analyzer.analyze(item)
    answer = base.tokenize(item.answer)
    plain = base.tokenize(f"{item.query}\n\n", add_special=True)
    chat_text = aligned.tokenizer.apply_chat_template(
        [{"role": "user", "content": item.query}], tokenize=False, add_generation_prompt=True
    )
    assert chat_text.startswith("<s>user: What is two plus two?") and chat_text.endswith("<s>assistant:")
    chat = aligned.tokenizer(chat_text, add_special_tokens=False)["input_ids"]
    assert chat[0] == aligned.tokenizer.bos_token_id and chat != plain
    for token in example.tokens:
        base_lp, base_rank = reference(base, plain + answer, len(plain) + token.index)
        aligned_lp, aligned_rank = reference(aligned, chat + answer, len(chat) + token.index)
        assert (token.rank, token.aligned_rank) == (base_rank, aligned_rank)
        assert token.aligned_prob == pytest.approx(np.exp(aligned_lp[token.id]), abs=1e-5)
    without = ShiftAnalyzer(base, mode="pair", aligned=aligned, top_k=3, ranked="answer").analyze(item)
    assert [t.aligned_prob for t in without.tokens] != [t.aligned_prob for t in example.tokens]
    with pytest.raises(UntunedError, match="no chat template: pass --no-aligned-template"):
        ShiftAnalyzer(
            base, mode="pair", aligned=load_backend(str(tiny_folders[1]), LoadOptions(device="cpu")), aligned_template=True
        )


# --- the paper's protocol (AlignTDS), each definition written out --------------------------------------


def aligntds_kl_written_out(base_lp: np.ndarray, aligned_lp: np.ndarray, text=lambda token: token) -> float:
    """compute_dist_diff.py's "KL" at top_k 10 on logit_analysis.py's top 30, as its text reads: tokens are their
    decoded ``text`` (logit_analysis.py keeps ``tokenizer.decode(id)``), found by ``list.index`` (the first)."""

    def top30(lp):
        ids = list(np.argsort(-lp, kind="stable")[:30])
        z = np.exp(lp[ids] - lp[ids].max())
        return ids, z / z.sum()

    base_ids, base_p = top30(base_lp)
    aligned_ids, aligned_p = top30(aligned_lp)
    base_ids, aligned_ids = [text(t) for t in base_ids], [text(t) for t in aligned_ids]
    total = 0.0
    for token in set(base_ids[:10]) | set(aligned_ids[:10]):
        w1 = base_p[base_ids.index(token)] if token in base_ids[:10] else 0.0
        w2 = aligned_p[aligned_ids.index(token)] if token in aligned_ids[:10] else 0.0
        if w1 > 0 and w2 > 0:
            total += w1 * np.log(w1 / w2)
    return total


def test_the_chat_template_protocol_matched_by_text_on_a_fixed_example(tiny_folders, tmp_path):
    """AlignTDS's base context and matching with the aligned model in its own chat template (a template of no
    family): the base reads BOS + "# Query: \\n ```{q}``` \\n\\n \\n# Answer: \\n ```", the aligned
    model its chat template; at each position the aligned model's top-1 token is ranked under the base (both
    ways where tokens tie), the position after the answer (its end) included, a literal "</s>" read as that
    end; KL(aligned‖base) over the whole vocabulary and AlignTDS's KL@10 beside it."""
    templated = make_tiny_llama(tmp_path / "aligned", seed=2, init_range=0.5, chat_template=CHAT_TEMPLATE)
    base = load_backend(str(tiny_folders[0]), LoadOptions(device="cpu"))
    aligned = load_backend(str(templated), LoadOptions(device="cpu"))
    analyzer = ShiftAnalyzer(
        base, mode="pair", aligned=aligned, context="aligntds", top_k=3, aligned_template=True, end=True, match="text"
    )
    assert not analyzer.settings.is_aligntds and "matched by decoded text" in analyzer.settings.protocol
    query, text = "What is two plus two?", "Four. The capital of France is Paris."
    example = analyzer.analyze(AnswerItem(id="x", query=query, answer=text + "</s>"))
    context = "# Query: \n ```What is two plus two?``` \n\n \n# Answer: \n ```"
    base_ctx = [base.tokenizer.bos_token_id, *base.tokenizer.encode(context, add_special_tokens=False)]  # with BOS
    assert base.tokenize(context, add_special=True) == base_ctx
    chat_text = aligned.tokenizer.apply_chat_template(
        [{"role": "user", "content": query}], tokenize=False, add_generation_prompt=True
    )
    chat = aligned.tokenizer(chat_text, add_special_tokens=False)["input_ids"]
    answer = base.tokenizer(text, add_special_tokens=False)["input_ids"]
    decode = lambda token: base.tokenizer.decode([int(token)])  # noqa: E731 (AlignTDS's text of a token)
    assert len(example.tokens) == len(answer) + 1 and example.tokens[-1].end and not example.tokens[0].end
    differs = 0
    for position, token in enumerate(example.tokens):
        aligned_lp, _ = reference(aligned, chat + answer + [0], len(chat) + position)
        base_lp, _ = reference(base, base_ctx + answer + [0], len(base_ctx) + position)
        top1 = int(np.argmax(aligned_lp))
        assert token.id == top1
        # AlignTDS's "top_rank": the aligned top-1's text among the base's top 10 texts, the first occurrence
        texts = [decode(t) for t in np.argsort(-base_lp, kind="stable")[:10]]
        id_rank = int((base_lp > base_lp[top1]).sum()) + 1
        assert token.rank == (texts.index(decode(top1)) + 1 if decode(top1) in texts else id_rank)
        if token.rank == id_rank:
            assert (token.rank_worst or token.rank) == int((base_lp >= base_lp[top1]).sum())
        assert token.kl == pytest.approx(float((np.exp(aligned_lp) * (aligned_lp - base_lp)).sum()), abs=1e-5)
        assert token.kl_top10 == pytest.approx(aligntds_kl_written_out(base_lp, aligned_lp, decode), abs=1e-5)
        if position < len(answer) and answer[position] != top1:
            differs += 1
            assert token.answer_id == answer[position]
            assert token.answer_rank == int((base_lp > base_lp[answer[position]]).sum()) + 1
    summary = summarize(
        [example],
        **{k: getattr(analyzer.settings, k) for k in ("mode", "base", "aligned", "context")},
        protocol=analyzer.settings.protocol,
        ranked="aligned-top1",
    )
    assert summary.top1_differs == differs > 0 and summary.answer_ratios is not None
    assert len(summary.by_relative_position) == 10 and summary.kl_top10.startswith("KL@10 (AlignTDS)")


def test_ties_are_counted_and_ranked_both_ways():
    """Three tokens share the top logit: the ranked one is 1 in its favour and 3 against it, a change of category."""
    from untuned.backends import scores_from_logits

    rows = np.log(np.asarray([[0.3, 0.3, 0.3, 0.1], [0.7, 0.1, 0.1, 0.1]], dtype=np.float32))
    _, ranks, _, _, worst = scores_from_logits(rows, np.asarray([2, 1]), 2, normalized=True)
    assert ranks.tolist() == [1, 2] and worst.tolist() == [3, 4]
    tokens = [
        TokenShift(index=0, id=2, text="a", rank=1, rank_worst=3, prob=0.3, category="unshifted"),
        TokenShift(index=1, id=1, text="b", rank=2, rank_worst=4, prob=0.1, category="marginal"),
        TokenShift(index=2, id=0, text="c", rank=1, prob=0.7, category="unshifted"),
    ]
    example = ShiftExample(id="1", query="q", answer="a", mode="text", tokens=tokens, answer_tokens=3)
    summary = summarize([example], mode="text", base="b", aligned=None, context="plain")
    assert (summary.ties, summary.tie_changes) == (2, 2)
    assert [b.label for b in summary.by_relative_position] == ["0-10%", "30-40%", "60-70%"]


def test_the_papers_protocol_on_llama_cpp_with_one_model_on_both_sides(gemma_path):
    """gemma against itself through AlignTDS's context: every aligned top-1 is the base's top-1 (rank 1), every
    KL is 0, and the end position is scored (llama.cpp gives the row after the answer)."""
    from untuned.backends.llamacpp import LlamaCppBackend

    one, two = (LlamaCppBackend(gemma_path, n_ctx=1024, name="gemma") for _ in range(2))
    try:
        analyzer = ShiftAnalyzer(one, mode="pair", aligned=two, context="aligntds", end=True, top_k=3)
        answer = "Paris is the capital."
        example = analyzer.analyze(AnswerItem(id="p", query="What is the capital of France?", answer=answer + "</s>"))
        length = len(one.tokenize(answer))
    finally:
        one.close()
        two.close()
    assert len(example.tokens) == length + 1 and example.tokens[-1].end
    assert all(
        t.rank == 1 and t.kl == pytest.approx(0, abs=1e-6) and t.kl_top10 == pytest.approx(0, abs=1e-6) for t in example.tokens
    )


def test_cli_pair_ids_protocol_on_answers_the_aligned_model_makes(tiny_folders, fixture_data, tmp_path):
    """`shift pair --protocol ids --dataset`: the aligned model answers greedily with no penalty in its chat
    template, the run says which protocol made it and records how the answers were made."""
    templated = make_tiny_llama(tmp_path / "aligned", seed=2, init_range=0.5, chat_template=CHAT_TEMPLATE)
    args = ["shift", "pair", "--model", str(tiny_folders[0]), "--aligned", str(templated), "--dataset", "just-eval"]
    args += ["--data-file", str(fixture_data / "just_eval_instruct.jsonl"), "--limit", "2", "--max-tokens", "6"]
    result = CliRunner().invoke(app, [*args, "--protocol", "ids", "--out", str(tmp_path / "o"), "--no-plots", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "protocol: ids: " in plain(result.output)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["protocol"].startswith("ids: ") and summary["ranked"] == "aligned-top1"
    assert summary["answers_sampling"]["temperature"] == 0 and summary["answers_sampling"]["repetition_penalty"] == 1.0
    examples = [json.loads(line) for line in (tmp_path / "o" / "examples.jsonl").read_text().splitlines()]
    assert len(examples) == 2 and all(e["tokens"][-1]["end"] for e in examples)
    assert summary["overall"]["tokens"] == sum(len(e["tokens"]) for e in examples) and len(summary["by_relative_position"]) >= 2


@pytest.mark.slow
def test_context_mode_on_one_instance_equals_two_and_keeps_the_samplers_choices(gemma, gemma_path):
    """A server has one model: context mode on the same instance runs the two passes in turn and gives the
    records of two instances side by side (KL apart: never both rows at once). An answer sampled with a
    repetition penalty records, where it left the URIAL side's first choice, its own rank there."""
    from untuned.backends import Sampling
    from untuned.backends.llamacpp import LlamaCppBackend
    from untuned.data import Item
    from untuned.pipeline.shift import generate_answers

    prompt = load_prompt("helpful")
    questions = [Item(id="q1", turns=("Explain, step by step, how to make a cup of tea.",), dataset="demo")]
    penalised = Sampling(max_tokens=48, repetition_penalty=1.8)
    items = generate_answers(gemma, questions, context="urial", prompt=prompt, sampling=penalised)
    one = ShiftAnalyzer(gemma, mode="context", aligned=gemma, prompt=prompt).analyze(items[0])
    second = LlamaCppBackend(gemma_path, n_ctx=4096)
    try:
        two = ShiftAnalyzer(gemma, mode="context", aligned=second, prompt=prompt).analyze(items[0])
    finally:
        second.close()
    assert len(one.tokens) == len(two.tokens) > 8
    fields = ("id", "rank", "category", "answer_id", "answer_rank", "answer_aligned_rank", "aligned_rank")
    same = [all(getattr(a, f) == getattr(b, f) for f in fields) for a, b in zip(one.tokens, two.tokens)]
    assert sum(same) >= len(same) - 1, [a for a, ok in zip(one.tokens, same) if not ok]  # a near-tie may round apart
    assert all(t.kl is None for t in one.tokens) and all(t.kl is not None for t in two.tokens)
    off = [t for t in one.tokens if t.answer_id is not None]
    assert off, "a penalty of 1.8 leaves the model's first choice somewhere"
    assert all(t.answer_rank_under("aligned") > 1 for t in off)  # the sampler's doing, recorded as such
    assert all(t.answer_rank_under("aligned") == t.aligned_rank == 1 for t in one.tokens if t.answer_id is None)
    from untuned.shift.output import viewer_data

    narrow = WholeRowsOnly(gemma)  # a backend that cannot rank chosen tokens: the passes over whole rows
    rows = ShiftAnalyzer(narrow, mode="context", aligned=narrow, prompt=prompt).analyze(items[0])
    same = [all(getattr(a, f) == getattr(b, f) for f in fields) for a, b in zip(one.tokens, rows.tokens)]
    assert len(rows.tokens) == len(one.tokens) and sum(same) >= len(same) - 1
    shown = viewer_data([one])[0]["tokens"]  # shift.html shows the answer, the ranked first choice on hover
    assert "".join(t[0] for t in shown).strip() == items[0].answer.strip()
    assert [t[6] for t in shown] == [t.text if t.answer_id is not None else None for t in one.tokens]


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40))
def test_token_texts_join_to_the_decoded_answer(gemma, text):
    """The page shows an answer token by token: the parts join to what the ids decode to, a character
    whose bytes span tokens (emoji, rare scripts on gemma's byte fallback) shown once, at its last token."""
    from untuned.shift.contexts import token_texts

    ids = gemma.tokenize(text)
    parts = token_texts(gemma.detokenize, ids)
    assert len(parts) == len(ids) and "".join(parts) == gemma.detokenize(ids)
    assert all("\ufffd" not in part for part in parts) or "\ufffd" in gemma.detokenize(ids)


class WholeRowsOnly:
    """The Backend protocol alone over a real backend (no TargetScoring): what a plugin may offer."""

    def __init__(self, backend) -> None:
        self.inner, self.name, self.context_length = backend, backend.name, backend.context_length

    def tokenize(self, text, *, add_special=False):
        return self.inner.tokenize(text, add_special=add_special)

    def detokenize(self, tokens):
        return self.inner.detokenize(tokens)

    def stream(self, prompt, sampling):
        return self.inner.stream(prompt, sampling)

    def score(self, tokens, *, start=1, top_k=5):
        return self.inner.score(tokens, start=start, top_k=top_k)

    def distributions(self, tokens, *, start=1):
        return self.inner.distributions(tokens, start=start)

    def close(self) -> None:
        pass


def test_score_targets_ranks_the_chosen_tokens_as_whole_rows_do(gemma):
    """TargetScoring on llama.cpp: the sequence's own tokens as targets give score(); other targets get
    the ranks and log-probabilities that whole rows give them; a bad target is refused by name."""
    ids = gemma.tokenize("The capital of France is Paris, and the capital of Spain is Madrid.", add_special=True)
    start = 3
    own = gemma.score(ids, start=start, top_k=5)
    same = gemma.score_targets(ids, ids[start:], start=start, top_k=5)
    assert np.array_equal(same.ranks, own.ranks) and np.allclose(same.logprobs, own.logprobs, atol=1e-5)
    rows = np.concatenate([r for _, r in gemma.distributions(ids, start=start)])
    targets = [int(np.argsort(-row)[4]) for row in rows]  # each position's fifth choice
    other = gemma.score_targets(ids, targets, start=start, top_k=5)
    assert np.allclose(other.logprobs, rows[np.arange(len(rows)), targets], atol=1e-4)
    assert all(1 <= r <= 5 for r in other.ranks) and sum(r == 5 for r in other.ranks) >= len(targets) - 1  # ties aside
    assert np.array_equal(other.top_ids, own.top_ids) and np.array_equal(other.sequence_ranks, own.ranks)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        gemma.score_targets(ids, [10**7] * (len(ids) - start), start=start)
    with pytest.raises(ValueError, match="targets for"):
        gemma.score_targets(ids, targets[:-1], start=start)
