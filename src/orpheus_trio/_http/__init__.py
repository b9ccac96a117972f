"""The client's own HTTP/1.1: response heads and bodies parsed sans-IO (:mod:`.h1`), and a
connection pool over any byte stream (:mod:`.pool`). The transports in
:mod:`orpheus_trio.transports` put them on each event loop's sockets."""
