"""Name rules shared by Envs, VMs and snapshots (the model field validator)."""

from django.core.validators import RegexValidator

from ttportal.limits import NAME_PATTERN, NAME_RULE


class WholeMatch(RegexValidator):
    """A RegexValidator that matches the whole value: Django's uses `search`, where `$`
    also matches before a trailing newline ("web\\n" would pass)."""

    def __call__(self, value):
        if not isinstance(value, str) or self.regex.fullmatch(value) is None:
            from django.core.exceptions import ValidationError

            raise ValidationError(self.message, code=self.code, params={"value": value})


validate_dns_label = WholeMatch(NAME_PATTERN, NAME_RULE)
