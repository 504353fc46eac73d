from django.urls import path

from . import site, views

app_name = "playbooks"
urlpatterns = [
    path("playbooks/", views.playbook_list, name="list"),
    path("playbooks/<slug:key>/install", views.playbook_install, name="install"),
    # The demo website the simulator's visitors walk through: public, like any tracked site.
    path("demo-site/", site.page, {"path": ""}, name="site_home"),
    path("demo-site/<path:path>", site.page, name="site_page"),
]
