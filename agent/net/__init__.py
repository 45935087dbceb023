"""The agent's one HTTPS client: TLS connections and HTTP/1.1 exchanges that
end by one deadline, whatever the peer does (`tls`, `http`)."""
