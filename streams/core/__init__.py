"""Pure, deterministic computation: no Kafka, faust or HTTP imports; time is an argument."""
