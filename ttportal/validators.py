"""Name rules shared by Envs and VMs."""

from django.core.validators import RegexValidator

# DNS-label-like: lower-case letters, digits and hyphens, starting with a letter,
# not ending with a hyphen, at most 63 characters (it ends up in host names).
NAME_RULE = (
    "must be 1-63 characters of lower-case letters, digits and hyphens, "
    "starting with a letter and not ending with a hyphen"
)
NAME_REGEX = r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
validate_dns_label = RegexValidator(NAME_REGEX, NAME_RULE)
