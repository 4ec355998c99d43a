"""Fuzz cases pinned after the exploring profile found them: ``(seed, target, ops)``.

Each broke the rule (a traceback, a hang or a peak over budget) on the code of its day; the five
cases of issue 25 item 1 come first.
"""

PINNED = [
    # issue 25 item 1: a metadata array claiming 2^40 elements; 2M empty strings; a header claiming 3 GiB;
    # 10^9 layers in config.json; a gauge archive with a 2 GiB member
    ("gguf", "info", [("claim", 0, 2**40)]),  # a UINT8 array claiming 2^40 elements, holding none
    ("gguf", "info", [("strings", 2_000_000)]),
    ("st_header", "info", [("st_hlen", 3 * 2**30), ("grow", 3 * 2**30 + 64)]),
    ("config", "apply", [("json_key", "num_hidden_layers", 10**9)]),
    ("gauge", "gauge", [("zip_bomb", "junk.npy", 2**31)]),
    # the first CI run: numpy's .npy header parser raises tokenize.TokenError on a header cut short
    ("tokens", "tokens", [("npy_hlen", 1)]),
    ("vec_npz", "steering", [("zip_member", 0, ("npy_hlen", 1))]),
    # the first exploring run: a safetensors dtype that is a JSON list (unhashable) raised TypeError
    ("st_header", "info", [("json_set", 18, [])]),
    ("vec_st", "steering", [("json_set", 3, [])]),
    ("sae_dir", "sae", [("json_set", 1, [])]),
    # the second exploring run: zipfile raises NotImplementedError for an unknown zip version
    ("gauge", "gauge", [("zip_rename", 3, ""), ("splice", 0.84, b"\xff\xfe\x00")]),
]
