"""The local engine: DataLoader decoding workers, the network in this process, group commits."""
