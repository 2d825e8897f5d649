"""Data: COCO reading and validation, TFRecords, synthetic shapes, dense targets, tf.data."""
