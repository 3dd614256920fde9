"""URLs of the Django test project."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("orders/<str:alias>/", views.place_order),
    path("async-orders/<str:alias>/", views.place_order_async),
    path("async-events/<str:alias>/", views.publish_async),
]
