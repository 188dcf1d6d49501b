"""schemathesis hooks of the OpenAPI test: how to generate tus request bodies."""

import schemathesis
from hypothesis import strategies as st

# tus sends upload bytes as application/offset+octet-stream: any bytes.
schemathesis.openapi.media_type(
    "application/offset+octet-stream", st.binary(max_size=4096)
)
