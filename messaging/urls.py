from django.urls import path

from messaging import views, webhooks

app_name = "messaging"

urlpatterns = [
    # The token names the organization (the vendors send nothing else we could trust): see messaging/webhooks.py.
    path("webhooks/chatwoot/<str:token>/", webhooks.chatwoot_webhook, name="chatwoot-webhook"),
    path("webhooks/manychat/<str:token>/", webhooks.manychat_webhook, name="manychat-webhook"),
    path("conversations/", views.inbox, name="inbox"),
    path("conversations/matches/", views.matches, name="matches"),
    path("conversations/matches/<int:candidate_id>/link/", views.match_link, name="match-link"),
    path("conversations/matches/unlink/<str:patient_id>/", views.match_unlink, name="unlink"),
    path("conversations/messages/<int:message_id>/", views.message_link, name="message"),
    path("conversations/<str:conversation_id>/", views.conversation_detail, name="conversation"),
    path("conversations/<str:conversation_id>/reply/", views.conversation_reply, name="reply"),
]
