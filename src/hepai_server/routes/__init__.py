"""The API's endpoints: thin handlers that parse, call a gateway service and encode."""
