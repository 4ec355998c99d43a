"""Experiment 4: steering vectors on SmolLM2-135M-Instruct moved to re-gauged copies, B_d vs S_d.

Sentiment: the steering vector is the difference of the mean residual activations (after block
``L``, positions ≥ 1) of positive and negative sentences; its *effect* is the change of the mean
next-token log-probability of positive words minus negative words on neutral prompts when the vector
is added at ``L`` (:func:`gaugejax.interventions.forward_with_steering`). The model is stored in
several hidden random charts; in each we recover the gauge from activations on corpus text (B_d:
sign-marginalized matcher; S_d: permutation matcher), transport the vector
(:func:`gaugejax.transport.transport_vector`) and measure its effect on the re-gauged copy.
``kept = effect on the copy / effect on the original``.

Refusal: we first check whether the instruct model refuses harmful requests at all (greedy
generation). It does not, so the refusal direction is the one a refusing system prompt induces:
the difference of the last prompt token's mean activation on harmful requests with that system
prompt and with the default one. Its effect is the change of the log-odds of refusal-like vs
compliance-like first answer tokens on harmless requests.
"""

from __future__ import annotations

import numpy as np

from experiments import prompts as P
from experiments.common import Context, Result, SeedRow, Table, figure, load_smollm, pct, truncated
from experiments.data import token_windows

NAME = "steering"
TITLE = "Steering vectors on SmolLM2-135M: sentiment and refusal"


def pad(seqs, pad_id: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(n, T)`` ids and the lengths (causal models: padding never affects earlier positions)."""
    t = max(len(s) for s in seqs)
    out = np.full((len(seqs), t), pad_id, np.int32)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out, np.array([len(s) for s in seqs])


def activations(model, seqs, layer: int, mode: str) -> np.ndarray:
    """Per-prompt activation after block ``layer``: mean over positions ≥ 1 (``"mean"``) or the last token."""
    import gaugejax as gj

    tokens, lens = pad(seqs)
    h = np.asarray(gj.residual_stream(truncated(model, max(layer, 1)), tokens, final_norm=False)[layer])
    if mode == "last":
        return h[np.arange(len(lens)), lens - 1]
    return np.stack([h[i, 1:n].mean(0) for i, n in enumerate(lens)])


def last_logprobs(model, tokens, lens, layer=None, vector=None, scale: float = 1.0) -> np.ndarray:
    """Next-token log-probabilities at each prompt's last position, optionally steered."""
    import jax

    import gaugejax as gj
    from gaugejax.interventions import forward_with_steering

    logits = gj.forward(model, tokens) if vector is None else forward_with_steering(model, tokens, layer, vector, scale)
    lp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    return lp[np.arange(len(lens)), lens - 1]


def _logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def generate(model, seqs, n_new: int, eos: int = 2) -> list[list[int]]:
    """Greedy continuations (one fixed-size buffer, so one compilation)."""
    import gaugejax as gj

    lens = np.array([len(s) for s in seqs])
    buf, _ = pad([list(s) + [eos] * n_new for s in seqs])
    for k in range(n_new):
        logits = np.asarray(gj.forward(model, buf))
        nxt = logits[np.arange(len(seqs)), lens + k - 1].argmax(-1)
        buf[np.arange(len(seqs)), lens + k] = nxt
    return [buf[i, lens[i]:lens[i] + n_new].tolist() for i in range(len(seqs))]


def _short(text: str, n: int = 80) -> str:
    return text.strip().replace("\n", " ")[:n]


def run(ctx: Context) -> Result:
    import gaugejax as gj
    from gaugejax.transport import transport_vector

    res = Result(NAME, TITLE, seed=ctx.seed)
    model, encode = load_smollm(ctx)
    decode = ctx.cache.get("smollm_decode")
    d = model.d
    layer = model.config.n_layers // 3
    n_charts, n_probe_rows = ctx.size((4, 8), (12, 16))
    n_pos = ctx.size(8, len(P.POSITIVE))
    scale, r_scale = 1.0, 2.0

    # --- sentiment vector and its effect on the original model
    ids = lambda texts: [encode(t) for t in texts]  # noqa: E731
    v = (activations(model, ids(P.POSITIVE[:n_pos]), layer, "mean").mean(0)
         - activations(model, ids(P.NEGATIVE[:n_pos]), layer, "mean").mean(0))
    neutral, nlens = pad(ids(P.NEUTRAL))
    pos_ids = [int(encode(w)[0]) for w in P.POSITIVE_WORDS]
    neg_ids = [int(encode(w)[0]) for w in P.NEGATIVE_WORDS]

    def sentiment(lp):
        return lp[:, pos_ids].mean(1) - lp[:, neg_ids].mean(1)

    def sent_effect(m, vec):
        return sentiment(last_logprobs(m, neutral, nlens, layer, vec, scale)) - sentiment(last_logprobs(m, neutral, nlens))

    eff0 = sent_effect(model, v)

    # --- refusal: does the model refuse? and a refusal direction induced by a refusing system prompt
    n_harm = ctx.size(4, len(P.HARMFUL))
    harmful = ids([P.chat(u) for u in P.HARMFUL[:n_harm]])
    harmful_told = ids([P.chat(u, P.REFUSING_SYSTEM) for u in P.HARMFUL[:n_harm]])
    harmless = ids([P.chat(u) for u in P.HARMLESS[:n_harm]])
    refusals = refusals_told = None
    if decode is not None:
        with ctx.task("steering: greedy answers to harmful prompts", 2) as t:
            texts = [decode(o) for o in generate(model, harmful, ctx.size(12, 16))]
            t.advance()
            texts_told = [decode(o) for o in generate(model, harmful_told, ctx.size(12, 16))]
            t.advance()
        refusals = [any(p in s.lower() for p in P.REFUSAL_PHRASES) for s in texts]
        refusals_told = [any(p in s.lower() for p in P.REFUSAL_PHRASES) for s in texts_told]
    r_dir = activations(model, harmful_told, layer, "last").mean(0) - activations(model, harmful, layer, "last").mean(0)
    hl_tok, hl_lens = pad(harmless)
    ref_ids = sorted({int(encode(w)[0]) for w in P.REFUSAL_STARTS})
    com_ids = sorted({int(encode(w)[0]) for w in P.COMPLIANCE_STARTS})

    def refusal_score(lp):
        return _logsumexp(lp[:, ref_ids]) - _logsumexp(lp[:, com_ids])

    def ref_effect(m, vec):
        return (refusal_score(last_logprobs(m, hl_tok, hl_lens, layer, vec, r_scale))
                - refusal_score(last_logprobs(m, hl_tok, hl_lens)))

    ref0 = ref_effect(model, r_dir)

    # --- hidden charts, recovered gauges, transported vectors
    probe = token_windows(ctx, encode, n_probe_rows, 128, split="probe", seed_name=NAME, key="smollm")
    from experiments.common import stream_at

    x_probe = stream_at(model, probe, layer)[:, 1:].reshape(-1, d)
    kept = {"B_d": [], "S_d": []}
    rkept = {"B_d": [], "S_d": []}
    accs = {"B_d": [], "S_d": []}
    with ctx.task("steering: re-gauged copies", n_charts) as t:
        for c in range(n_charts):
            truth = gj.SignedPermutation.random(ctx.key(NAME, c), d)
            moved = gj.apply_gauge(model, truth)
            y_probe = stream_at(moved, probe, layer)[:, 1:].reshape(-1, d)
            for group, method in (("B_d", "sign_marginalized"), ("S_d", "permutation")):
                g = gj.match(x_probe, y_probe, method=method, warn=False).gauge
                accs[group].append(g.agreement(truth)["signed"])
                kept[group].append(float(sent_effect(moved, transport_vector(v, g, group=group)).mean() / eff0.mean()))
                rkept[group].append(float(ref_effect(moved, transport_vector(r_dir, g, group=group)).mean() / ref0.mean()))
            t.advance()
    kept = {k: np.array(x) for k, x in kept.items()}
    rkept = {k: np.array(x) for k, x in rkept.items()}

    rows = [["original model, original vector", "—", float(eff0.mean()), 1.0, "—", float(ref0.mean()), 1.0, "—"]]
    for group in ("B_d", "S_d"):
        rows.append([f"re-gauged copy, vector transported under {group}", float(np.mean(accs[group])),
                     float(kept[group].mean() * eff0.mean()), f"{kept[group].mean():.3f} ± {kept[group].std():.3f}",
                     f"{int((kept[group] < 0).sum())}/{n_charts}",
                     float(rkept[group].mean() * ref0.mean()), f"{rkept[group].mean():.3f} ± {rkept[group].std():.3f}",
                     f"{int((rkept[group] < 0).sum())}/{n_charts}"])
    res.tables.append(Table(
        f"Steering at the stream after block {layer} (sentiment scale {scale}, refusal scale {r_scale}), mean over "
        f"{n_charts} hidden charts (± sd)",
        ["model / vector", "gauge perm+sign accuracy", "sentiment effect (nats)", "sentiment kept", "sentiment reversed",
         "refusal-direction effect (nats)", "refusal kept", "refusal reversed"], rows,
        note=f"sentiment effect: Δ[mean log p(positive words) − mean log p(negative words)] on {len(P.NEUTRAL)} neutral "
             f"prompts; refusal effect: Δ[log-odds of refusal-like vs compliance-like first answer tokens] on {n_harm} "
             "harmless chat prompts. 'kept' = effect on the copy / effect on the original."))

    per = [[c, kept["B_d"][c], kept["S_d"][c], rkept["B_d"][c], rkept["S_d"][c]] for c in range(n_charts)]
    res.tables.append(Table("Per hidden chart", ["chart", "sentiment kept B_d", "sentiment kept S_d",
                                                 "refusal kept B_d", "refusal kept S_d"], per))
    if refusals is not None:
        res.tables.append(Table(
            "Does SmolLM2-135M-Instruct refuse? Greedy answers to harmful requests, default vs refusing system prompt",
            ["request", "answer (default system prompt)", "refuses", "answer (refusing system prompt)", "refuses"],
            [[P.HARMFUL[i], _short(texts[i]), refusals[i], _short(texts_told[i]), refusals_told[i]]
             for i in range(n_harm)]))

    def draw(ax):
        xs = np.arange(2)
        for i, (group, col) in enumerate((("B_d", "C2"), ("S_d", "C0"))):
            ax.bar(xs + (i - 0.5) * 0.35, [kept[group].mean(), rkept[group].mean()], 0.35,
                   yerr=[kept[group].std(), rkept[group].std()], color=col, label=f"transported under {group}")
            ax.scatter(np.repeat(xs + (i - 0.5) * 0.35, n_charts), np.r_[kept[group], rkept[group]], s=8, color="k", zorder=3)
        ax.axhline(1, color="0.6", ls="--", lw=1)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xticks(xs, ["sentiment", "refusal-style direction"])
        ax.set_ylabel("effect kept (1 = unchanged)")
        ax.legend(fontsize=8)
        ax.set_title("Steering after transport to a re-gauged SmolLM2")

    res.figures.append((figure(ctx, "steering.png", draw), "Fraction of the steering effect kept after transport "
                        "(dots: individual hidden charts)."))
    n_ref = None if refusals is None else int(sum(refusals))
    n_ref_told = None if refusals_told is None else int(sum(refusals_told))
    res.claims.update(sentiment_effect=float(eff0.mean()), kept_bd=float(kept["B_d"].mean()),
                      kept_sd=float(kept["S_d"].mean()), kept_sd_abs_max=float(np.abs(kept["S_d"]).max()),
                      refusal_effect=float(ref0.mean()), refusal_kept_bd=float(rkept["B_d"].mean()),
                      refusal_kept_sd=float(rkept["S_d"].mean()), refusal_reversed_sd=int((rkept["S_d"] < 0).sum()),
                      sentiment_reversed_sd=int((kept["S_d"] < 0).sum()), n_charts=n_charts,
                      refusals=n_ref, refusals_told=n_ref_told, n_harmful=n_harm)
    refuses = "" if n_ref is None else f"the model refuses {n_ref}/{n_harm} harmful requests (so: a refusal-style direction); "
    if kept["S_d"].mean() < 0.1:
        res.notes.append(
            f"Under S_d the sentiment effect is gone rather than reduced: {pct(kept['S_d'].mean())} ± "
            f"{pct(kept['S_d'].std())} across {n_charts} hidden charts (reversed in {int((kept['S_d'] < 0).sum())}), where "
            "the seed reports 17.2 % kept for Qwen. Same conclusion (S_d transport breaks steering), smaller remainder.")
    if n_ref is not None and n_ref < n_harm / 2:
        told = ("even a refusing system prompt does not make it refuse" if not n_ref_told else
                f"a refusing system prompt makes it refuse {n_ref_told}/{n_harm}")
        res.notes.append(
            f"Differs in kind: SmolLM2-135M-Instruct does not refuse harmful requests ({n_ref}/{n_harm} greedy answers "
            f"contain a refusal phrase; {told}), so there is no native refusal direction as in the seed's Qwen. Our "
            "refusal-style direction is the activation change a refusing system prompt induces; added to harmless "
            f"requests it raises the log-odds of refusal-like vs compliance-like first answer tokens by "
            f"{float(ref0.mean()):.2f} nats. That is the effect transported here. S_d transport reverses it in "
            f"{int((rkept['S_d'] < 0).sum())} of {n_charts} hidden charts and keeps {pct(rkept['S_d'].mean())} on "
            "average: the sign of what survives depends on the chart (the S_d-transported vector is the right one with "
            "the sign of about half of its coordinates flipped), where the seed reports a reversal.")
    return res.conclude(
        f"SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized); vectors at the stream after block {layer} of "
        f"{model.config.n_layers}, added at every position. {n_pos}+{n_pos} sentiment sentences, "
        f"{len(P.NEUTRAL)} neutral prompts; refusal direction: last-token activation on {n_harm} harmful requests with "
        f"a refusing system prompt minus with the default one, its effect measured on {n_harm} harmless requests "
        f"(experiments/prompts.py). {n_charts} hidden charts, uniformly random signed permutations; gauges "
        f"recovered from {x_probe.shape[0]} corpus tokens. Keys fold_in(key({ctx.seed}), crc32('{NAME}'), chart).",
        SeedRow(
            "sentiment steering effect kept after transport, B_d vs S_d", "95.8 % vs 17.2 % (Qwen)",
            f"{pct(kept['B_d'].mean())} vs {pct(kept['S_d'].mean())} (S_d: sd {pct(kept['S_d'].std())} over "
            f"{n_charts} charts, reversed in {int((kept['S_d'] < 0).sum())})",
            f"SmolLM2-135M-Instruct, block {layer}"),
        SeedRow(
            "refusal steering under S_d transport", "reverses sign (Qwen)",
            f"{refuses}kept {pct(rkept['B_d'].mean())} under B_d, {pct(rkept['S_d'].mean())} "
            f"under S_d (reversed in {int((rkept['S_d'] < 0).sum())}/{n_charts} charts)",
            f"SmolLM2-135M-Instruct, block {layer}"))
