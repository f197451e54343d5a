"""What can be told about a template value without Jinja2 (kept apart so that planning a
file with no templates never imports it)."""


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value
