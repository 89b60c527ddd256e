from django.urls import path

from patients import views

app_name = "patients"

urlpatterns = [
    path("", views.home, name="home"),
    path("patients/", views.patient_list, name="list"),
    path("patients/export.csv", views.patient_export, name="export"),
    path("patients/<str:patient_id>/", views.patient_detail, name="detail"),
]
