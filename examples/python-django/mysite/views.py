from django.http import HttpResponse


def index(request):
    return HttpResponse("Hello from python-django\n", content_type="text/plain")
