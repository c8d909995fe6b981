"""My Envs' rows are HTML built in envs/env_table.py: their action forms must be what
templates/envs/_action.html writes elsewhere, and each row what its Env allows."""

from __future__ import annotations

import re

import pytest
from django.template.loader import render_to_string
from django.urls import reverse

from envs.env_table import action_form
from envs.models import Env
from tests.support import T0

CSRF = '<input type="hidden" name="csrfmiddlewaretoken" value="token">'


def collapsed(html: str) -> str:
    return re.sub(r"\s+", " ", html).strip()


@pytest.mark.parametrize("params", [
    {"url": "/envs/1/stop/", "label": "Stop", "cls": "btn-sm", "next": "/", "cooldown": 0},
    {"url": "/envs/1/start/", "label": "Start", "cls": "btn-sm", "next": "/", "cooldown": 42},
    {"url": "/envs/1/extend/", "label": "+1 h", "cls": "btn-sm", "next": "/", "field": "hours", "value": "1"},
    {"url": "/x/?a=1&b=<2>", "label": 'say "hi" & <go>', "cls": "", "field": "f", "value": '"v"'},
    {"url": "/x/", "label": 'say "hi" & <go>', "cls": "a<b", "next": "/?n=<1>", "cooldown": 5},
])
def test_an_action_form_is_what_the_action_template_writes(params):
    # The template takes gated=True for the actions the cooldown holds back; a cooldown
    # given to action_form means the same.
    template = render_to_string("envs/_action.html", {**params, "gated": "cooldown" in params,
                                                      "csrf_token": "token"})
    assert collapsed(action_form(csrf_input=CSRF, **params)) == collapsed(template)


def test_each_row_offers_what_its_env_allows(client, alice, olga, make_env, time_machine):
    time_machine.move_to(T0, tick=False)
    running = make_env(alice, name="running")
    stopped = make_env(alice, name="stopped")
    Env.objects.filter(pk=stopped.pk).update(is_stopped=True)
    client.force_login(alice)
    body = client.get(reverse("envs:list")).content.decode()
    assert f'action="{reverse("envs:stop", args=[running.pk])}"' in body
    assert f'action="{reverse("envs:start", args=[stopped.pk])}"' in body
    assert f'action="{reverse("envs:start", args=[running.pk])}"' not in body
    assert body.count('<input type="hidden" name="hours" value="1">') == 2
    assert "<td>alice</td>" not in body  # no owner column for one's own Envs
    client.force_login(olga)
    assert "<td>alice</td>" in client.get(reverse("envs:list")).content.decode()
