# Stand-in for promptfoo/promptfoo examples/eval-bert-score/bertscore_check.py: the best word
# overlap (F1) with any reference, instead of BERTScore F1.
def get_assert(output, context):
    refs = context["vars"]["reference"]
    refs = refs if isinstance(refs, list) else [refs]
    out = set(output.lower().split())
    best = 0.0
    for ref in refs:
        words = set(ref.lower().split())
        common = len(out & words)
        if common:
            p, r = common / len(out), common / len(words)
            best = max(best, 2 * p * r / (p + r))
    return best
