"""The usage API: arguments, bearer-token auth, the caller's scope, continuation tokens,
page reads, wire rows, ARM-shaped answers and the OpenAPI document."""
