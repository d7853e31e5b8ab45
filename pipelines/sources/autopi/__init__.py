"""AutoPi automatic trip exports: drained on events, landed losslessly, cleared once safe."""
