"""Firefox ESR (through Marionette): one person creates a room and an invite, another joins
through the link in a second Firefox profile, and they talk both ways."""


def test_create_join_chat_in_firefox(server, people):
    dana = people("dana", kind="firefox")
    dana.open(server)
    dana.unlock("dana-password-1")
    dana.create_room("Firefox room")
    link = dana.invite()

    erin = people("erin", kind="firefox")
    erin.open(link)
    erin.unlock("erin-password-1")
    erin.join("From Dana")
    erin.wait_joined()

    dana.send("hello from firefox")
    erin.wait_text("hello from firefox")
    erin.send("hello back from firefox")
    dana.wait_text("hello back from firefox")
    own = [m for m in erin.messages() if m["text"] == "hello back from firefox"][0]
    assert own["own"] and own["sender"] == "You"
    dana.screenshot("chat-firefox.png")
