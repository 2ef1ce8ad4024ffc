"""The use cases, each composing the layers below: trace session, list, doctor, completion candidates."""
