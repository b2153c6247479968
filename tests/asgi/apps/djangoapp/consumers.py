from channels.generic.websocket import AsyncWebsocketConsumer


class Echo(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "bye":
            await self.close(code=4001)
        elif text_data is not None:
            await self.send(text_data=f"channels: {text_data}")
        else:
            await self.send(bytes_data=bytes_data)
