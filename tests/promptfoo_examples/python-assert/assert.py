# Stand-in for promptfoo/promptfoo examples/python-assert/assert.py (not reproduced here): the
# "detailed result object" pattern from that example's README.
def get_assert(output, context):
    words = len(output.split())
    return {
        "pass": words <= 10,
        "score": 1.0 if words <= 3 else 0.5,
        "reason": f"{words} words about {context['vars']['topic']}",
    }
