"""faceregen: the domain package (face models, encoders, geometry, rendering, synthetic data).

Everything that is not Lightning lives here; ``lightning_modules/``, ``datamodules/`` and
``callbacks/`` wrap it for training.
"""
