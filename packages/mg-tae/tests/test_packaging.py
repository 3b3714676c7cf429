"""mg-tae installs and imports on its own. mg-tae is usable alone: it pulls no sibling, no video decoder and no web framework."""

FORBIDDEN = ["gradio", "decord", "mg_data", "mg_train", "mg_demo", "mg_transformer", "mg_parallel"]
SIBLINGS = []


def test_installs_and_imports_standalone(check_standalone):
    check_standalone("mg-tae", forbidden=FORBIDDEN, siblings=SIBLINGS)
