"""Drives evi's status page in headless Chromium (selenium + chromium-driver), as an operator
would, and checks what it shows. Prints one line per step; exits non-zero on the first failure.

  browser.py BASE_URL TOKEN SCREENSHOT

BASE_URL is the MI HTTP listener (http://127.0.0.1:PORT); the daemon must publish E_WEB and set
modules.event_virtual.failover_timeout to a few seconds.
"""
import json
import socket
import sys
import threading
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base, token, screenshot = sys.argv[1], sys.argv[2], sys.argv[3]


def mi(method, params=None):
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params or [], "id": 1}).encode()
    request = urllib.request.Request(base + "/mi", data=body, headers={
        "Content-Type": "application/json", "Authorization": "Bearer " + token})
    reply = json.load(urllib.request.urlopen(request, timeout=10))
    if "error" in reply:
        raise SystemExit(f"MI {method}: {reply['error']}")
    return reply["result"]


def step(name):
    print(name, flush=True)


class TCPReceiver:
    """A tcp: peer that accepts and reads; stop() closes it so evi's deliveries fail."""

    def __init__(self, port=0):
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.connections = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self.drain, args=(connection,), daemon=True).start()

    @staticmethod
    def drain(connection):
        try:
            while connection.recv(65536):
                pass
        except OSError:
            pass

    def stop(self):
        # shutdown first: a close alone leaves the port listening while accept() blocks on it.
        try:
            self.server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.server.close()
        for connection in self.connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            except OSError:
                pass


options = Options()
for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900"]:
    options.add_argument(argument)
options.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
wait = lambda seconds: WebDriverWait(driver, seconds, poll_frequency=0.05)


def text_of(selector):
    """The text of the first element matching selector, or None: the page replaces its rows at
    every snapshot, so an element found may be gone by the time its text is read."""
    for _ in range(10):
        try:
            elements = driver.find_elements(By.CSS_SELECTOR, selector)
            return elements[0].text if elements else None
        except StaleElementReferenceException:
            continue
    return None


def click(selector):
    """Clicks the first element matching selector, finding it again if the page replaced it."""
    for _ in range(10):
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError("could not click " + selector)


try:
    driver.get(base + "/?token=" + token)
    wait(10).until(lambda d: d.find_element(By.ID, "live").get_attribute("class") == "on")
    assert driver.current_url.rstrip("/") == base, driver.current_url
    step("page live, token left the address bar")

    started = time.time()
    mi("evi:subscribe", ["E_WEB", "udp:127.0.0.1:9"])
    wait(3).until(lambda d: d.find_elements(By.CSS_SELECTOR, 'tr.subscriber[data-socket="udp:127.0.0.1:9"]'))
    elapsed = time.time() - started
    assert elapsed < 1.0, f"the subscription showed after {elapsed:.2f} s"
    step(f"subscription shown {elapsed:.2f} s after the MI call")

    receiver = TCPReceiver()
    member = f"tcp:127.0.0.1:{receiver.port}"
    mi("evi:subscribe", ["E_WEB", f"virtual:FAILOVER {member} udp:127.0.0.1:9"])
    mi("evi:raise", ["E_WEB", {"n": 1}])
    selector = f'li.member[data-member="{member}"] .state'
    wait(5).until(lambda d: d.find_elements(By.CSS_SELECTOR, selector))
    assert text_of(selector) == "up"
    step("FAILOVER member up")

    receiver.stop()
    deadline = time.time() + 15
    while time.time() < deadline:
        mi("evi:raise", ["E_WEB", {"n": 2}])
        if text_of(selector) == "failed":
            break
        time.sleep(0.3)
    assert text_of(selector) == "failed", "the member never showed failed"
    step("member failed once its receiver died")
    driver.save_screenshot(screenshot)

    receiver = TCPReceiver(receiver.port)
    deadline = time.time() + 20
    while time.time() < deadline:
        mi("evi:raise", ["E_WEB", {"n": 3}])
        if text_of(selector) == "up":
            break
        time.sleep(0.5)
    assert text_of(selector) == "up", "the member never came back up"
    step("member up again after its receiver returned")

    click('button.unsubscribe[data-socket="udp:127.0.0.1:9"]')
    wait(5).until(lambda d: not d.find_elements(By.CSS_SELECTOR, 'tr.subscriber[data-socket="udp:127.0.0.1:9"]'))
    remaining = [s["socket"] for e in mi("evi:subscribers")["Events"] for s in e.get("Subscribers", [])]
    assert "udp:127.0.0.1:9" not in remaining, remaining
    step("unsubscribe button removed the subscription")

    reloads = driver.execute_script("return performance.getEntriesByType('navigation').length")
    assert reloads == 1, reloads
    step("no reloads: the stream kept the page current")
    receiver.stop()
finally:
    driver.quit()
