"""Where a notification goes: Telegram through the platform's bot, a trader's Discord webhook, a signed
webhook. Each channel turns a provider's answer into delivered (with the provider's message id) or a
:class:`DeliveryError` that says whether trying again can help."""
