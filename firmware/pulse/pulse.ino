// retrotread pulse board: a reed switch or Hall sensor on the treadmill's roller, counted on an
// ATmega328P (Arduino Uno/Nano) and reported over USB serial in the pulse.md line protocol:
//
//   P <board_ms> <total_pulses>\n      at 115200 baud, on every pulse and at least 5 times a second
//   # retrotread-pulse <version>\n     once at start (the pulse:// driver logs comment lines)
//
// Wiring: the switch between pin 2 (INT0) and GND; the internal pull-up holds the pin high, the
// magnet closes the switch and pulls it low: one falling edge per turn of the roller.
// Build and flash: firmware/Makefile (docs/firmware.md).

#include <Arduino.h>

#define RETROTREAD_PULSE_VERSION "1.0.0"

static const uint8_t SENSOR_PIN = 2;  // INT0 on the ATmega328P: the only pins with an edge interrupt are 2 and 3

// A reed switch bounces for about 1 ms when it closes and again when it opens; the fastest real
// pulse is about 40 ms apart (22 km/h on 0.25 m of belt per pulse, pulse.md). Edges closer than
// 20 ms to the last counted one are bounce: that rejects the closing bounce and the opening bounce
// of a magnet that holds the switch for less than 20 ms, and still leaves the fastest real pulse a
// factor of two of margin.
static const uint32_t DEBOUNCE_US = 20000UL;

// pulse.md asks for at least 5 lines a second; 10 leaves room for a lost line before the driver's
// 2 s silence watchdog, and costs 2 ms of the UART's time per second at 115200 baud.
static const uint32_t LINE_EVERY_MS = 100UL;

// 32-bit counters: they wrap at 2^32 like board_ms, and the driver unwraps both (pulse.md).
static volatile uint32_t pulses = 0;
static volatile uint32_t last_counted_us = 0;
static volatile bool counted_any = false;

static void on_falling_edge() {
  const uint32_t now = micros();  // safe in an ISR: micros() reads the timer with interrupts off
  // Measured from the last *counted* edge, so a long burst of bounces cannot hold a pulse back.
  if (counted_any && now - last_counted_us < DEBOUNCE_US) {
    return;
  }
  counted_any = true;
  last_counted_us = now;
  pulses = pulses + 1;
}

static void write_line(uint32_t board_ms, uint32_t total) {
  // "\n" only, never println's "\r\n": a terminal in cooked mode would turn the "\r" into a
  // second, empty line.
  Serial.print('P');
  Serial.print(' ');
  Serial.print(board_ms);
  Serial.print(' ');
  Serial.print(total);
  Serial.print('\n');
}

void setup() {
  pinMode(SENSOR_PIN, INPUT_PULLUP);
  Serial.begin(115200);
  Serial.print(F("# retrotread-pulse " RETROTREAD_PULSE_VERSION "\n"));
  Serial.print(F("# debounce_us=20000 line_every_ms=100 pin=2\n"));
  attachInterrupt(digitalPinToInterrupt(SENSOR_PIN), on_falling_edge, FALLING);
}

void loop() {
  static uint32_t sent_pulses = 0;
  static uint32_t last_line_ms = 0;
  static bool sent_any = false;

  // The count and the clock read together, interrupts off: a line never carries a count newer
  // than its time, and board_ms never goes back from one line to the next (a step back would read
  // as a board reset).
  noInterrupts();
  const uint32_t total = pulses;
  const uint32_t now = millis();
  interrupts();

  if (!sent_any || total != sent_pulses || now - last_line_ms >= LINE_EVERY_MS) {
    write_line(now, total);
    sent_any = true;
    sent_pulses = total;
    last_line_ms = now;
  }
}
