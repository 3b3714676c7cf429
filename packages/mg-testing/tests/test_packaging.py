"""mg-testing installs and imports on its own: it pulls no sibling (mg-tae and mg-transformer use it in their tests,
so it must not depend on either), no video decoder and no web framework."""

FORBIDDEN = [
    "gradio",
    "decord",
    "pytest",
    "mg_data",
    "mg_train",
    "mg_demo",
    "mg_tae",
    "mg_transformer",
    "mg_parallel",
]
SIBLINGS = []


def test_installs_and_imports_standalone(check_standalone):
    check_standalone("mg-testing", forbidden=FORBIDDEN, siblings=SIBLINGS)
