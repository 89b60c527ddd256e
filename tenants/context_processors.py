from django.conf import settings


def clerk(request):
    return {
        "clerk": {
            "publishable_key": settings.CLERK_PUBLISHABLE_KEY,
            "frontend_api_url": settings.CLERK_FRONTEND_API_URL.rstrip("/"),
            "sign_in_url": settings.CLERK_SIGN_IN_URL,
            "dev_sign_in": settings.DEV_SIGN_IN_ENABLED,
        }
    }
