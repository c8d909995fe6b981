"""Email through Django's email backend (settings: TT_EMAIL_*; console by default).

An SMTP answer in the 5xx range is final (the address or the message is refused);
anything else that goes wrong (no connection, a 4xx, a timeout) may pass, and the
delivery is tried again. The SMTP password never reaches a delivery's recorded error.
"""

from __future__ import annotations

import smtplib

from django.conf import settings
from django.core.mail import EmailMessage

from notifications.channels import Outcome


def send(address: str, *, subject: str, text: str, event: str, delivery_id: int) -> Outcome:
    message = EmailMessage(
        subject=subject, body=text, from_email=settings.DEFAULT_FROM_EMAIL, to=[address],
        headers={"X-TT-Event": event, "X-TT-Delivery": str(delivery_id), "Auto-Submitted": "auto-generated"},
    )
    try:
        message.send(fail_silently=False)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        return Outcome(False, retry=not any(code >= 500 for code in codes), error=redact(f"refused: {exc}"))
    except smtplib.SMTPResponseException as exc:
        said = redact(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
        return Outcome(False, retry=exc.smtp_code < 500, error=said)
    except (OSError, smtplib.SMTPException) as exc:
        return Outcome(False, retry=True, error=redact(f"{exc.__class__.__name__}: {exc or 'no answer'}"))
    return Outcome(True)


def redact(text: str) -> str:
    """`text` without the SMTP password, whatever put it there."""
    password = settings.EMAIL_HOST_PASSWORD
    return text.replace(password, "********") if password else text
