"""The cluster: a replicated journal on NATS JetStream, one leader node holding a lease, hot
standbys tailing the stream, and stateless gateways with local read replicas."""
