"""The audio service: speech-to-text with Whisper (faster-whisper), text-to-speech with Piper and Bark."""
