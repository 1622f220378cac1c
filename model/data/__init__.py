"""The inputs as they arrive: fetching under a policy, URL checks, image decoding, the CSV, the split."""
