"""gpio: a reed switch on the board's own GPIO pin, read with gpiozero."""
