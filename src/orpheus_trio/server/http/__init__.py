"""The one HTTP/1.1 server that runs the app: listeners and connection limits (:mod:`.run`),
one task per connection (:mod:`.connection`)."""
