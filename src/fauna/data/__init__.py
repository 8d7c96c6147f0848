"""Datasets on disk: the folder layout, images, TFRecord shards, the tf.data input pipeline."""
