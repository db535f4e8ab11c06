"""`agentheal …` (placeholder while the spine is built)."""


def main() -> int:
    return 0
