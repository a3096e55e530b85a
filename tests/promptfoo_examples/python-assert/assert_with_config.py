# Copied from promptfoo/promptfoo examples/python-assert/assert_with_config.py (prints removed).
def get_assert(output, context):
    test_configuration = context.get("config", {})
    canonical_fruit_list = test_configuration.get("fruitList", [])
    assert_passed = False

    for fruit in canonical_fruit_list:
        if fruit in output.lower():
            assert_passed = True
            break

    return assert_passed
