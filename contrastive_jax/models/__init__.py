"""Encoders and heads (Flax NNX). No TensorFlow here."""
