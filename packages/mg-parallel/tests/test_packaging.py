"""mg-parallel installs and imports on its own. mg-parallel is usable alone: it pulls no sibling, no video decoder and no web framework."""

FORBIDDEN = ["gradio", "decord", "mg_data", "mg_train", "mg_demo", "mg_tae", "mg_transformer"]
SIBLINGS = []


def test_installs_and_imports_standalone(check_standalone):
    check_standalone("mg-parallel", forbidden=FORBIDDEN, siblings=SIBLINGS)
