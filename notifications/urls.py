"""The portal's notification pages (mounted by ttportal/portal_urls.py under notifications/)."""

from django.urls import path

from notifications import views

portal_patterns = [
    path("", views.notification_settings, name="settings"),
    path("email/", views.email_settings, name="email"),
    path("email/test/", views.email_test, name="email_test"),
    path("webhooks/<int:pk>/test/", views.webhook_test, name="webhook_test"),
    path("webhooks/<int:pk>/delete/", views.webhook_delete, name="webhook_delete"),
    path("extend/<str:token>/", views.extend, name="extend"),
]
