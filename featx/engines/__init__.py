"""Engines that fill a feature cache: ``local`` (DataLoader workers, :func:`featx.extract.fill_store`) and
``ray`` (Ray Data, :mod:`featx.engines.ray`, an optional extra). Each keys every input, computes what the
namespace lacks and commits it shard by shard through :meth:`featx.cache.Namespace.write`, so a cache
filled by one engine is read by every door."""
