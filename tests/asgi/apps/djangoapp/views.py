import asyncio

from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt


def hello(request):
    return JsonResponse({"path": request.path, "method": request.method,
                         "scheme": request.scheme, "q": request.GET.get("q")})


async def slow(request):
    await asyncio.sleep(0.05)
    return HttpResponse(b"async django\n", content_type="text/plain")


@csrf_exempt
def echo(request):
    return HttpResponse(request.body, content_type="application/octet-stream")
